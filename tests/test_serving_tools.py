"""Tool calling and response_format on the chat route, spoken to by the official openai client."""

import json

import httpx
import jsonschema
import openai
import pytest

from course_utils.defaults import DEFAULT_MODEL
from course_utils.serving import LLM
from course_utils.serving.server import background_server
from course_utils.serving.tools import ChatPlan, ToolDef, parse_reply, plan_chat

NAME = DEFAULT_MODEL
CONVERT = {"type": "function", "function": {
    "name": "convert_units", "description": "Convert a distance between kilometres and miles.",
    "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "from_unit": {"enum": ["km", "mi"]},
                                                     "to_unit": {"enum": ["km", "mi"]}},
                   "required": ["value", "from_unit", "to_unit"], "additionalProperties": False}}}
CALCULATOR = {"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression such as 12 * (3 + 4).",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 40}},
                   "required": ["expression"], "additionalProperties": False}}}
TOOLS = [CONVERT, CALCULATOR]
ASK = [{"role": "user", "content": "How many kilometres are 5 miles?"}]


@pytest.fixture(scope="module")
def url():
    llm = LLM(NAME, num_blocks=128, block_size=16, max_model_len=1024, max_num_seqs=16)
    with background_server(llm.engine, NAME) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)


def schema_of(name):
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def test_a_required_call_round_trips_through_the_official_client(client):
    reply = client.chat.completions.create(model=NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=80, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function" and call.function.name in ("convert_units",
                                                                                              "calculator")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, schema_of(call.function.name))  # valid by construction
    result = {"result": 8.047} if call.function.name == "convert_units" else {"result": 8}
    follow_up = ASK + [choice.message.model_dump(exclude_none=True),
                       {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
    final = client.chat.completions.create(model=NAME, messages=follow_up, tools=TOOLS, max_tokens=40, temperature=0)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_a_named_function_is_always_that_function_with_valid_arguments(client):
    questions = ["Convert 12 km to miles.", "What is 3 + 4 * 2?", "Tell me a joke.", "How far is 26.2 miles in km?"]
    for question in questions:
        reply = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": question}], tools=TOOLS, max_tokens=80, temperature=0,
            tool_choice={"type": "function", "function": {"name": "convert_units"}})
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == "convert_units"
        jsonschema.validate(json.loads(call.function.arguments), schema_of("convert_units"))


def test_streamed_tool_calls_arrive_whole_and_plain_text_still_streams(client):
    chunks = list(client.chat.completions.create(model=NAME, messages=ASK, tools=TOOLS, tool_choice="required",
                                                 max_tokens=80, temperature=0, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.tool_calls for d in deltas if d.tool_calls]
    assert len(calls) == 1 and calls[0][0].index == 0 and calls[0][0].id.startswith("call_")
    jsonschema.validate(json.loads(calls[0][0].function.arguments), schema_of(calls[0][0].function.name))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    texts = [c.choices[0].delta.content for c in client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Write two sentences about rivers."}], tools=TOOLS,
        tool_choice="auto", max_tokens=30, temperature=0, stream=True) if c.choices and c.choices[0].delta.content]
    assert len(texts) > 3  # auto: once the reply cannot be a call, it streams piece by piece


def test_response_format_json_schema_and_json_object(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Name a large city and its population, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        max_tokens=60, temperature=0)
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    loose = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "A JSON greeting."}],
                                           response_format={"type": "json_object"}, max_tokens=120, temperature=0)
    if loose.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(loose.choices[0].message.content), dict)
    else:  # cut by max_tokens: still the start of a JSON object
        assert loose.choices[0].message.content.startswith("{")


def test_auto_replies_are_parsed_for_calls_and_otherwise_left_as_text():
    plan = plan_chat(ASK, [ToolDef(**CONVERT)], "auto")
    text = 'Sure. <tool_call>{"name": "convert_units", "arguments": {"value": 5, "from_unit": "mi", "to_unit": "km"}}' \
           '</tool_call>'
    content, calls = parse_reply(text, plan)
    assert content == "Sure." and calls[0]["function"]["name"] == "convert_units"
    assert json.loads(calls[0]["function"]["arguments"]) == {"value": 5, "from_unit": "mi", "to_unit": "km"}
    for broken in ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "<tool_call>{not json</tool_call>",
                   "5 miles is 8 km."):
        assert parse_reply(broken, plan) == (broken, [])
    assert parse_reply(text, ChatPlan(ASK)) == (text, [])  # tool_choice none: nothing is parsed
    assert "convert_units" in plan.messages[0]["content"] and plan.messages[0]["role"] == "system"


HOSTILE = [
    {"tools": [CONVERT] * 2},  # duplicate names
    {"tools": [{"type": "function", "function": {"name": "has space", "parameters": {}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]},
    {"tools": [{"type": "retrieval"}]},
    {"tools": [CALCULATOR] * 65},
    {"tool_choice": "required"},  # no tools
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "missing"}}},
    {"tools": TOOLS, "tool_choice": "sometimes"},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": "calculator"}},  # was a 500
    {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": "f"}]}]},
    {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},  # no schema
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
    {"response_format": {"type": "yaml"}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(unclosed"}}, "required": ["a"]}}}],
     "tool_choice": "required"},  # a schema that does not compile into a grammar
    {"messages": [{"role": "tool"}]},  # a tool message without content
    {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                         "function": {"name": "f", "arguments": "{not json"}}]}]},
    {"messages": [{"role": "wizard", "content": "hi"}]},
]


def test_hostile_tool_and_format_requests_get_a_one_line_400_and_the_server_goes_on(url, client):
    with httpx.Client(base_url=url, timeout=60) as http:
        for extra in HOSTILE:
            body = {"model": NAME, "messages": ASK, "max_tokens": 8} | extra
            response = http.post("/chat/completions", json=body)
            assert response.status_code == 400, (extra, response.status_code, response.text)
            message = response.json()["error"]["message"]
            assert message and "\n" not in message, (extra, message)
    ok = client.chat.completions.create(model=NAME, messages=ASK, max_tokens=4, temperature=0)
    assert ok.choices[0].message.content
