"""OpenAI's tool calling and ``response_format`` for the chat route, built on structured outputs.

A model sees its tools as text: :func:`plan_chat` appends their names, descriptions and parameter
schemas to the system message and asks for calls written as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (the Hermes convention many open
models are trained on; earlier calls and tool results in the conversation are rendered the same
way). What ``tool_choice`` changes is the constraint on the reply:

* ``"none"``: no tools in the prompt, no calls parsed;
* ``"auto"`` (the default when tools are given): unconstrained; calls are parsed out of the text
  afterwards and a reply without a valid one is plain content. This is what a model must get right
  on its own;
* ``"required"``: a Lark grammar forces exactly one call whose name is one of the tools and whose
  arguments follow that tool's JSON schema (llguidance's ``%json``);
* a named function: the same, for that function only.

``response_format`` (``json_object`` or ``json_schema``) constrains a plain reply the same way.
:func:`parse_reply` turns the generated text into OpenAI's message: ``content`` and ``tool_calls``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from course_utils.serving.structured import JSON_OPTIONS, StructuredOutputs

__all__ = ["CALL_CLOSE", "CALL_OPEN", "ChatPlan", "ResponseFormat", "ToolDef", "call_grammar", "may_become_call",
           "parse_reply", "plan_chat"]

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_TOOLS = 64
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)
_TOOLS_PROMPT = ("You can call the tools below. To call one, reply with nothing but\n"
                 f'{CALL_OPEN}{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}{CALL_CLOSE}\n'
                 "and wait for its result. Tools:")


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


@dataclass
class ChatPlan:
    """What the server does with one chat request: the messages for the chat template, the
    constraint on the reply, and how to read tool calls out of it."""

    messages: list[dict[str, str]]
    structured: StructuredOutputs | None = None
    tool_mode: str = "none"  # none | auto | required | named
    tool_names: list[str] = field(default_factory=list)


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a JSON schema object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ValueError(f"{where} is not a valid JSON schema: {err.message}") from None


def _render(message: dict[str, Any]) -> dict[str, str]:
    """One OpenAI message as the plain {role, content} a chat template takes."""
    role, content = message["role"], message.get("content") or ""
    calls = message.get("tool_calls") or []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise ValueError("messages: each tool call needs a \"function\" object with name and arguments")
        try:
            arguments = json.loads(function.get("arguments", "{}"))
        except (TypeError, ValueError):
            raise ValueError("messages: a tool call's arguments must be a JSON string") from None
        content += CALL_OPEN + json.dumps({"name": function.get("name"), "arguments": arguments}) + CALL_CLOSE
    return {"role": role, "content": content}


def plan_chat(messages: list[dict[str, Any]], tools: list[ToolDef] | None = None,
              tool_choice: str | dict[str, Any] | None = None,
              response_format: ResponseFormat | None = None) -> ChatPlan:
    """The plan for a chat request; ValueError (one line, naming the field) for a bad combination."""
    tools = tools or []
    if len(tools) > MAX_TOOLS:
        raise ValueError(f"tools: at most {MAX_TOOLS} tools per request, got {len(tools)}")
    names = [tool.function.name for tool in tools]
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"tools: a function name is 1-64 letters, digits, _ or -, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError("tools: function names must be unique")
    for tool in tools:
        _check_schema(tool.function.parameters, f"tools: {tool.function.name}'s parameters")
    mode = _tool_mode(tool_choice, names)
    fmt = response_format.type if response_format is not None else "text"
    if fmt != "text" and mode != "none":
        raise ValueError("response_format: a JSON reply and tool calls cannot be asked for together; "
                         "drop the tools or set tool_choice to none")
    rendered = [_render(m) for m in messages]
    plan = ChatPlan(rendered, tool_mode=mode, tool_names=names if mode != "none" else [])
    if fmt == "json_object":
        plan.structured = StructuredOutputs(json_object=True)
    elif fmt == "json_schema":
        spec = response_format.json_schema or {}
        schema = spec.get("schema")
        _check_schema(schema, "response_format.json_schema.schema")
        plan.structured = StructuredOutputs(json=schema)
    if mode == "none":
        return plan
    described = _TOOLS_PROMPT + "\n" + "\n".join(json.dumps({
        "name": t.function.name, "description": t.function.description or "", "parameters": t.function.parameters})
        for t in tools)
    if rendered and rendered[0]["role"] == "system":
        rendered[0] = {"role": "system", "content": rendered[0]["content"] + "\n\n" + described}
    else:
        rendered.insert(0, {"role": "system", "content": described})
    if mode in ("required", "named"):
        chosen = [t for t in tools if mode == "required" or t.function.name == tool_choice["function"]["name"]]
        plan.structured = StructuredOutputs(grammar=call_grammar(chosen))
    return plan


def _tool_mode(tool_choice: str | dict[str, Any] | None, names: list[str]) -> str:
    if tool_choice is None:
        return "auto" if names else "none"
    if tool_choice == "none":
        return "none"
    if not names:
        raise ValueError("tool_choice: there are no tools to choose from; send tools or leave tool_choice out")
    if tool_choice in ("auto", "required"):
        return tool_choice
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(tool_choice, dict) or tool_choice.get("type") != "function" or name not in names:
        raise ValueError(f"tool_choice: none, auto, required, or {{\"type\": \"function\", \"function\": "
                         f"{{\"name\": one of {names}}}}}, got {json.dumps(tool_choice)[:200]}")
    return "named"


def call_grammar(tools: list[ToolDef]) -> str:
    """The Lark grammar of one call to one of ``tools``: the call markers around a JSON object whose
    ``name`` is the tool's and whose ``arguments`` follow its parameter schema."""
    variants = [{"type": "object",
                 "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters},
                 "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    schema = (variants[0] if len(variants) == 1 else {"anyOf": variants}) | {"x-guidance": JSON_OPTIONS}
    return f'start: "{CALL_OPEN}" call "{CALL_CLOSE}"\ncall: %json {json.dumps(schema)}'


def parse_reply(text: str, plan: ChatPlan | None) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of a generated reply: the calls to known tools written in it, in
    OpenAI's shape (arguments as a JSON string), and the text before the first call as content."""
    if plan is None or plan.tool_mode == "none":
        return text, []
    calls = []
    for match in _CALL.finditer(text):
        try:
            call = json.loads(match.group(1))
        except ValueError:
            continue
        if isinstance(call, dict) and call.get("name") in plan.tool_names and isinstance(call.get("arguments"), dict):
            calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                          "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}})
    if not calls:
        return text, []
    return text[:text.index(CALL_OPEN)].strip() or None, calls


def may_become_call(text: str, plan: ChatPlan | None) -> bool:
    """While streaming: could ``text`` (so far) still turn out to be a tool call? Then it is held back."""
    if plan is None or plan.tool_mode == "none":
        return False
    head = text.lstrip()
    return head.startswith(CALL_OPEN) or CALL_OPEN.startswith(head)
