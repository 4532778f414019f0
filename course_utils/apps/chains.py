"""Chains: model calls in sequence, each step's output validated before the next step reads it.

The article's three chains, on tasks where every intermediate step has a right answer known by
construction, so that each step can be scored and not only the end:

* **summarise-then-answer**: a ~200-word passage (``data/passages.jsonl``) with two facts inserted
  (two people's four-digit locker codes). Step 1 compresses the passage; step 2 answers "What is
  <name>'s locker code?" from the summary. A step is right when the summary still holds the code,
  and when the answer equals it.
* **decompose-then-solve**: "What are the locker codes of <A> and <B>?" is split into one
  sub-question per person (step 1), each answered from the passage (step 2, one call per
  sub-question), and the two answers joined by the application (step 3, no model call).
* **draft-then-critique**: a review (``data/sentiment.jsonl``) gets a label with a reason (step 1);
  a critic then agrees or disagrees (step 2), and a disagreement flips the label.

Every step asks for JSON in the shape of a pydantic model; the engine constrains decoding to that
model's JSON schema, and :func:`run_step` validates the reply with pydantic before the next step sees
it (a reply cut off by ``max_tokens`` fails validation, and its chain stops there, wrong).
``keep_original=True`` gives every later step the original input (passage, question or review)
besides the previous step's output: the article's advice, tested by ablation in
``benchmarks/chains_bench.py``. ``validate_content=True`` adds checks a production chain would make
without knowing the answer (the summary names the person asked about and holds a four-digit number;
each sub-question names exactly one of the two people); an item that fails them falls back to the
one-call answer.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from course_utils.stats import mcnemar, rate
from course_utils.tasks import load_task

__all__ = ["CHAINS", "ChainItem", "ChainRun", "Step", "StepRecord", "as_json", "chain_items", "compare_chains",
           "measure_chains", "one_call", "run_chain", "run_step", "step_table"]

_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena",
          "Marta", "Nils", "Olga", "Priya", "Quentin", "Rosa", "Sami", "Tara")
_CODE = "^[0-9]{4}$"


class _Reply(BaseModel):
    """A step's reply: exactly these fields (``additionalProperties: false`` in the JSON schema, so
    the grammar closes the object after them)."""

    model_config = ConfigDict(extra="forbid")


class Summary(_Reply):
    summary: str = Field(max_length=200)


class CodeAnswer(_Reply):
    code: str = Field(pattern=_CODE)


class SubQuestions(_Reply):
    """Two sub-questions, each in the one form the solver is asked (the grammar enforces the form;
    the model chooses the names)."""

    sub_questions: list[Annotated[str, Field(pattern="^What is [A-Z][a-z]+'s locker code\\?$")]] = Field(
        min_length=2, max_length=2)


class Draft(_Reply):
    label: str = Field(pattern="^(positive|negative)$")
    reason: str = Field(max_length=100)


class Critique(_Reply):
    verdict: str = Field(pattern="^(agree|disagree)$")


@dataclass(frozen=True)
class ChainItem:
    """One task instance: ``document`` (a passage with two inserted facts, or a review), the two
    ``names`` and their ``codes`` (passage tasks), ``label`` (reviews)."""

    document: str
    names: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    label: str = ""


@dataclass
class StepRecord:
    """What one step of one item produced: the parsed reply (None when it failed validation), whether
    it was right, and the tokens it cost (prompt + completion)."""

    output: BaseModel | None
    right: bool
    tokens: int


@dataclass
class ChainRun:
    """A chain on every item: per step, one :class:`StepRecord` per item; ``final`` whether the end
    answer was right; ``fell_back`` where content validation sent the item to the one-call answer."""

    chain: str
    variant: str
    steps: dict[str, list[StepRecord]] = field(default_factory=dict)
    final: list[bool] = field(default_factory=list)
    fell_back: list[bool] = field(default_factory=list)

    def tokens(self) -> list[int]:
        return [sum(records[i].tokens for records in self.steps.values()) for i in range(len(self.final))]


def _insert_facts(text: str, facts: Sequence[str], rng: random.Random) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    for fact in facts:
        sentences.insert(rng.randint(1, len(sentences)), fact)
    return " ".join(sentences)


def chain_items(task: str, count: int, seed: int = 0) -> list[ChainItem]:
    """``count`` items for ``task``: "passage" (a passage with two people's locker codes inserted at
    random sentence boundaries) or "review" (a labelled review)."""
    rng = random.Random(seed)
    if task == "review":
        return [ChainItem(r["text"], label=r["label"]) for r in rng.sample(load_task("sentiment"), count)]
    if task != "passage":
        raise ValueError(f"unknown chain task {task!r}; choose 'passage' or 'review'")
    passages = [p["text"] for p in load_task("passages")]
    items = []
    for i in range(count):
        names = tuple(rng.sample(_NAMES, 2))
        codes = tuple(str(c) for c in rng.sample(range(1000, 10000), 2))
        facts = [f"{name}'s locker code is {code}." for name, code in zip(names, codes, strict=True)]
        items.append(ChainItem(_insert_facts(passages[i % len(passages)], facts, rng), names, codes))
    return items


_SUMMARISE = "Summarise this text in at most two sentences, keeping its key facts."


def _ask(name: str) -> str:
    return f"What is {name}'s locker code?"


def _ask_both(item: ChainItem) -> str:
    return f"What are the locker codes of {item.names[0]} and {item.names[1]}?"


def _json_hint(model: type[BaseModel]) -> str:
    fields = ", ".join(f'"{name}"' for name in model.model_fields)
    return f"Reply in JSON with the field{'s' if len(model.model_fields) > 1 else ''} {fields}."


@dataclass(frozen=True)
class Step:
    """One model call per item: ``prompt(i)`` is the user message for item i, or None to skip
    the item (an earlier step failed); ``schema`` the reply's pydantic model (or a function of i
    giving one per item); ``right(i, output)`` scores a validated reply."""

    name: str
    schema: type[BaseModel] | Callable[[int], type[BaseModel]]
    prompt: Callable[[int], str | None]
    right: Callable[[int, BaseModel], bool]
    max_tokens: int = 24

    def model(self, i: int) -> type[BaseModel]:
        return self.schema if isinstance(self.schema, type) else self.schema(i)


def run_step(llm, step: Step, count: int) -> list[StepRecord]:
    """``step`` on items 0..count-1 as one greedy batch, each reply constrained to its JSON schema
    and then validated by pydantic; a skipped or invalid item gets ``StepRecord(None, False, ...)``."""
    from course_utils.serving import SamplingParams, StructuredOutputs

    prompts = {i: p for i in range(count) if (p := step.prompt(i)) is not None}
    records = [StepRecord(None, False, 0) for _ in range(count)]
    if not prompts:
        return records
    models = {i: step.model(i) for i in prompts}
    tokenizer = llm.engine.tokenizer
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{p}\n{_json_hint(models[i])}"}],
                                           tokenize=False, add_generation_prompt=True) for i, p in prompts.items()]
    params = [SamplingParams(temperature=0, max_tokens=step.max_tokens,
                             structured_outputs=StructuredOutputs(json=models[i].model_json_schema()))
              for i in prompts]
    for i, out in zip(prompts, llm.generate(texts, params), strict=True):
        completion = out.outputs[0]
        tokens = len(out.prompt_token_ids) + len(completion.token_ids)
        try:
            parsed = models[i].model_validate_json(completion.text)
        except ValidationError:
            records[i] = StepRecord(None, False, tokens)
            continue
        records[i] = StepRecord(parsed, bool(step.right(i, parsed)), tokens)
    return records


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def _summarise_then_answer(llm, items: Sequence[ChainItem], keep_original: bool, validate_content: bool,
                           direct: list[StepRecord] | None) -> ChainRun:
    run = ChainRun("summarise-then-answer", _variant(keep_original, validate_content))
    summary = Step("summarise", Summary, lambda i: f"{_SUMMARISE}\n\n{items[i].document}",
                   lambda i, out: items[i].codes[0] in out.summary, max_tokens=96)
    run.steps["summarise"] = run_step(llm, summary, len(items))

    def usable(i: int) -> bool:
        out = run.steps["summarise"][i].output
        if out is None:
            return False
        return not validate_content or (_mentions(out.summary, items[i].names[0])
                                        and re.search(r"\b[0-9]{4}\b", out.summary) is not None)

    def answer_prompt(i: int) -> str | None:
        if not usable(i):
            return None
        context = f"Summary: {run.steps['summarise'][i].output.summary}"
        if keep_original:
            context = f"Text: {items[i].document}\n\n{context}"
        return f"{context}\n\n{_ask(items[i].names[0])}"

    answer = Step("answer", CodeAnswer, answer_prompt, lambda i, out: out.code == items[i].codes[0], max_tokens=16)
    run.steps["answer"] = run_step(llm, answer, len(items))
    _finish(run, items, lambda i: run.steps["answer"][i].right, validate_content,
            lambda i: run.steps["summarise"][i].output is not None and not usable(i), direct)
    return run


def _decompose_then_solve(llm, items: Sequence[ChainItem], keep_original: bool, validate_content: bool,
                          direct: list[StepRecord] | None) -> ChainRun:
    run = ChainRun("decompose-then-solve", _variant(keep_original, validate_content))

    def split_right(i: int, out: SubQuestions) -> bool:  # needs only the question, not the answer
        named = [[n for n in items[i].names if _mentions(q, n)] for q in out.sub_questions]
        return all(len(found) == 1 for found in named) and {found[0] for found in named} == set(items[i].names)

    split = "Split this question into two questions, one about each person."
    decompose = Step("decompose", SubQuestions, lambda i: f"{split}\n\n{_ask_both(items[i])}", split_right,
                     max_tokens=40)
    run.steps["decompose"] = run_step(llm, decompose, len(items))

    def usable(i: int) -> bool:
        record = run.steps["decompose"][i]
        return record.output is not None and (not validate_content or record.right)

    def asked(i: int, part: int) -> str | None:  # the person sub-question ``part`` names, if exactly one
        found = [n for n in items[i].names if _mentions(run.steps["decompose"][i].output.sub_questions[part], n)]
        return found[0] if len(found) == 1 else None

    for part in (0, 1):
        def solve_prompt(i: int, part: int = part) -> str | None:
            if not usable(i):
                return None
            extra = f"\n\n(Asked as part of: {_ask_both(items[i])})" if keep_original else ""
            return f"{items[i].document}\n\n{run.steps['decompose'][i].output.sub_questions[part]}{extra}"

        def solve_right(i: int, out: CodeAnswer, part: int = part) -> bool:
            name = asked(i, part)
            return name is not None and out.code == items[i].codes[items[i].names.index(name)]

        run.steps[f"solve {part + 1}"] = run_step(
            llm, Step(f"solve {part + 1}", CodeAnswer, solve_prompt, solve_right, max_tokens=16), len(items))

    def joined_right(i: int) -> bool:  # step 3: the application pairs each answer with its person
        if not usable(i):
            return False
        answers = {asked(i, part): run.steps[f"solve {part + 1}"][i].output for part in (0, 1)}
        return all(answers.get(name) is not None and answers[name].code == code
                   for name, code in zip(items[i].names, items[i].codes, strict=True))

    _finish(run, items, joined_right, validate_content,
            lambda i: run.steps["decompose"][i].output is not None and not usable(i), direct)
    return run


def _draft_then_critique(llm, items: Sequence[ChainItem], keep_original: bool, validate_content: bool,
                         direct: list[StepRecord] | None) -> ChainRun:
    if validate_content:
        raise ValueError("draft-then-critique has no content check to add: its critic is the check")
    del direct
    run = ChainRun("draft-then-critique", _variant(keep_original, False))
    draft = Step("draft", Draft, lambda i: f"Is this review positive or negative? Give a short reason.\n\n"
                                           f"{items[i].document}",
                 lambda i, out: out.label == items[i].label, max_tokens=48)
    run.steps["draft"] = run_step(llm, draft, len(items))

    def critique_prompt(i: int) -> str | None:
        out = run.steps["draft"][i].output
        if out is None:
            return None
        shown = f"Review: {items[i].document}\n\n" if keep_original else ""
        return (f"{shown}A reader labelled this review {out.label}, because: {out.reason}\n"
                "Do you agree with the label?")

    critique = Step("critique", Critique, critique_prompt,
                    lambda i, out: (out.verdict == "agree") == run.steps["draft"][i].right, max_tokens=12)
    run.steps["critique"] = run_step(llm, critique, len(items))
    run.final = [r.right for r in run.steps["critique"]]  # a right verdict keeps a right label or flips a wrong one
    run.fell_back = [False] * len(items)
    return run


def _variant(keep_original: bool, validate_content: bool) -> str:
    return ("original kept" if keep_original else "previous output only") + (", validated" if validate_content else "")


def _finish(run: ChainRun, items: Sequence[ChainItem], chain_right: Callable[[int], bool], validate_content: bool,
            rejected: Callable[[int], bool], direct: list[StepRecord] | None) -> None:
    run.fell_back = [validate_content and rejected(i) for i in range(len(items))]
    if any(run.fell_back) and direct is None:
        raise ValueError("content validation falls back to the one-call answer: pass its records as `direct`")
    run.final = [direct[i].right if run.fell_back[i] else chain_right(i) for i in range(len(items))]
    if any(run.fell_back):
        run.steps["fallback (one call)"] = [direct[i] if run.fell_back[i] else StepRecord(None, False, 0)
                                            for i in range(len(items))]


CHAINS: dict[str, Callable[..., ChainRun]] = {
    "summarise-then-answer": _summarise_then_answer,
    "decompose-then-solve": _decompose_then_solve,
    "draft-then-critique": _draft_then_critique,
}


def one_call(llm, chain: str, items: Sequence[ChainItem]) -> list[StepRecord]:
    """The same task in one call, no chain: for the passage chains, the first person's code
    asked of the whole passage (summarise-then-answer) or both codes asked at once in one JSON
    object (decompose-then-solve); for reviews, the label alone."""
    if chain == "summarise-then-answer":
        return run_step(llm, Step("answer", CodeAnswer, lambda i: f"{items[i].document}\n\n{_ask(items[i].names[0])}",
                                  lambda i, out: out.code == items[i].codes[0], max_tokens=16), len(items))
    if chain == "decompose-then-solve":
        def both(i: int) -> type[BaseModel]:  # both codes in one object, keyed by the people's names
            fields = {name: (str, Field(pattern=_CODE)) for name in items[i].names}
            return create_model("Codes", __base__=_Reply, **fields)

        return run_step(llm, Step("answer both", both, lambda i: f"{items[i].document}\n\n{_ask_both(items[i])}",
                                  lambda i, out: tuple(getattr(out, n) for n in items[i].names) == items[i].codes,
                                  max_tokens=32), len(items))

    class Label(_Reply):
        label: str = Field(pattern="^(positive|negative)$")

    return run_step(llm, Step("label", Label, lambda i: f"Is this review positive or negative?\n\n{items[i].document}",
                              lambda i, out: out.label == items[i].label, max_tokens=12), len(items))


def run_chain(llm, chain: str, items: Sequence[ChainItem], keep_original: bool = False,
              validate_content: bool = False, direct: list[StepRecord] | None = None) -> ChainRun:
    """``chain`` (a key of :data:`CHAINS`) on every item with ``llm`` (a course ``LLM``), greedy."""
    if chain not in CHAINS:
        raise ValueError(f"unknown chain {chain!r}; choose from {', '.join(CHAINS)}")
    return CHAINS[chain](llm, items, keep_original, validate_content, direct)


def _rate(flags: Sequence[bool]) -> dict[str, Any]:
    return rate(sum(flags), len(flags)).as_dict() if flags else {"rate": None, "k": 0, "n": 0}


def step_table(run: ChainRun) -> dict[str, Any]:
    """Per step: accuracy over all items, and over the items whose earlier steps were all right
    (so the chain is right through step k exactly as often as the product of these conditional
    accuracies up to k); end to end; *recovery*, the share right at the end among items where some
    step was wrong (saved by a later step or by the fallback); and whether the end-to-end accuracy
    fell below the weakest step's, which is what compounding errors look like."""
    names = [n for n in run.steps if not n.startswith("fallback")]
    all_right_so_far = [True] * len(run.final)
    steps = {}
    for name in names:
        records = run.steps[name]
        given = [r.right for r, ok in zip(records, all_right_so_far, strict=True) if ok]
        steps[name] = {"accuracy": _rate([r.right for r in records]), "given_earlier_right": _rate(given),
                       "invalid": sum(r.output is None and r.tokens > 0 for r in records)}
        all_right_so_far = [ok and r.right for r, ok in zip(records, all_right_so_far, strict=True)]
    weakest = min(steps, key=lambda n: steps[n]["given_earlier_right"]["rate"] or 0.0)
    end = _rate(run.final)
    below = end["rate"] < (steps[weakest]["given_earlier_right"]["rate"] or 0.0)
    return {"chain": run.chain, "variant": run.variant, "steps": steps, "end_to_end": end,
            "every_step_right": _rate(all_right_so_far),
            "recovered_after_a_wrong_step": _rate([f for f, ok in zip(run.final, all_right_so_far, strict=True)
                                                   if not ok]),
            "weakest_step": weakest, "below_weakest_step": below, "fell_back": sum(run.fell_back),
            "tokens_per_item": round(sum(run.tokens()) / len(run.final), 1)}


def compare_chains(base: ChainRun, other: ChainRun, alpha: float = 0.05) -> dict[str, Any]:
    """McNemar's exact test of ``other`` against ``base`` on the same items, end to end, with its
    effect in one word: "helps" or "hurts" where p < ``alpha``, else "no significant difference"."""
    test = mcnemar(other.final, base.final)
    gain = test["a_only"] - test["b_only"]
    effect = ("helps" if gain > 0 else "hurts") if test["mcnemar_exact_p"] < alpha else "no significant difference"
    return {"chain": base.chain, "base": base.variant, "other": other.variant, "other_only": test["a_only"],
            "base_only": test["b_only"], "mcnemar_exact_p": test["mcnemar_exact_p"], "effect": effect,
            "verdict": (f"{other.chain}: '{other.variant}' against '{base.variant}': right on {gain:+d} more of "
                        f"{len(base.final)} items, McNemar exact p = {test['mcnemar_exact_p']:.2g}: {effect}")}


def as_json(record: StepRecord) -> str | None:
    """A step's validated output as JSON text (for printing an example), or None."""
    return None if record.output is None else json.dumps(record.output.model_dump())


def measure_chains(llm, passages: Sequence[ChainItem], reviews: Sequence[ChainItem],
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every chain and variant on the given items, with the one-call answer beside each: the step
    tables (:func:`step_table`), McNemar tests of keeping the original input, of content validation
    and of the chain against one call, and verdicts printed from those figures."""
    report: dict[str, Any] = {"tables": [], "tests": [], "one_call": {}}
    for chain, items in (("summarise-then-answer", passages), ("decompose-then-solve", passages),
                         ("draft-then-critique", reviews)):
        if progress:
            progress(chain)
        direct = one_call(llm, chain, items)
        direct_run = ChainRun(chain, "one call", {"one call": direct}, [r.right for r in direct], [False] * len(items))
        report["one_call"][chain] = {"accuracy": _rate(direct_run.final),
                                     "tokens_per_item": round(sum(direct_run.tokens()) / len(items), 1)}
        plain = run_chain(llm, chain, items)
        kept = run_chain(llm, chain, items, keep_original=True)
        runs = [plain, kept]
        if chain != "draft-then-critique":
            runs.append(run_chain(llm, chain, items, validate_content=True, direct=direct))
        report["tables"] += [step_table(run) for run in runs]
        report["tests"] += [compare_chains(plain, run) for run in runs[1:]] + [compare_chains(plain, direct_run)]
    report["article_advice"] = _advice(report)
    return report


def _advice(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The article's chain advice, judged per chain from the measured tables and tests."""
    def effects(variant: str) -> dict[str, str]:
        return {t["chain"]: t["effect"] for t in report["tests"] if t["other"] == variant}

    plain = [t for t in report["tables"] if t["variant"] == _variant(False, False)]
    return {
        "errors compound (end to end below the weakest step)": {
            t["chain"]: (f"{'yes' if t['below_weakest_step'] else 'no'}: end to end {t['end_to_end']['rate']:.0%}, "
                         f"weakest step '{t['weakest_step']}' "
                         f"{t['steps'][t['weakest_step']]['given_earlier_right']['rate'] or 0:.0%}") for t in plain},
        "keeping the original input at every step": effects(_variant(True, False)),
        "validating intermediate outputs (fallback to one call)": effects(_variant(False, True)),
        "one call instead of the chain (fewer steps)": effects("one call"),
    }
