"""Model cards: the article's card form, written as a Hugging Face model card and checked.

A card is YAML metadata (license, language, base model, datasets, ``model-index`` evaluation
results) above Markdown sections. ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` and
:class:`~huggingface_hub.ModelCard` write both, from the library's own template; this module adds
what the course knows about a model (sizes from ``architecture.sizing``, perplexity from chapter 5's
benchmark, tool-calling accuracy from chapter 8's, the datasheets of the data those used) and a
local validation with one clear line per problem (``ModelCard.validate`` asks the Hub, which the
course cannot reach).

Three ways in, one code path: :func:`card_form` (an ipywidgets form in a notebook),
:func:`write_card` (answers from a dict or a YAML file; ``llm-course model-card``), and tests that
fill the form and click its button.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from course_utils.architecture.sizing import active_parameter_count, parameter_count, published_config
from course_utils.choosing.landscape import load_models

__all__ = ["LICENSES", "MISSING", "CardAnswers", "card_form", "card_problems", "check_written_card", "load_answers",
           "measured_facts", "prefilled", "render_card", "write_card"]

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
MISSING = "[More Information Needed]"  # the template's placeholder for an empty section
# Licence identifiers the Hub recognises (a subset); "other" needs license_name and license_link.
LICENSES = ("apache-2.0", "mit", "bsd-3-clause", "gpl-3.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
            "openrail", "llama2", "llama3", "llama3.1", "llama3.2", "gemma", "other")


@dataclass
class CardAnswers:
    """The form's answers: the article's fields (intended use, out-of-scope use, training data,
    evaluation, limitations, ethical considerations, license, contacts) and the card's identity."""

    model_id: str = ""
    summary: str = ""
    developers: str = ""
    intended_use: str = ""
    out_of_scope_use: str = ""
    training_data: str = ""
    evaluation: str = ""
    limitations: str = ""
    ethical_considerations: str = ""
    license: str = ""
    license_name: str = ""
    license_link: str = ""
    contact: str = ""
    base_model: str = ""
    language: str = "en"
    datasets: list[str] = field(default_factory=list)


REQUIRED = ("model_id", "intended_use", "out_of_scope_use", "limitations", "license", "contact")
LABELS = {"model_id": "Model id", "summary": "One-line summary", "developers": "Developed by",
          "intended_use": "Intended use", "out_of_scope_use": "Out-of-scope use", "training_data": "Training data",
          "evaluation": "Evaluation", "limitations": "Limitations", "ethical_considerations": "Ethical considerations",
          "license": "License", "license_name": "License name (for 'other')",
          "license_link": "License link (for 'other')", "contact": "Contact", "base_model": "Base model",
          "language": "Language"}


def _read(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def measured_facts(model: str) -> dict[str, Any]:
    """What the course measured or can compute for ``model`` (a name in ``data/models.csv``).

    Returns ``sizes`` (parameters, stored and active, where the architecture is published),
    ``eval_results`` (huggingface_hub EvalResults from the recorded benchmarks that ran this
    model) and ``evaluation`` (the same as prose for the card's section, with n and where the
    figures come from).
    """
    info = {m.model: m for m in load_models()}.get(model)
    if info is None:
        raise ValueError(f"unknown model {model!r}; the card generator knows: "
                         f"{', '.join(m.model for m in load_models())}")
    facts: dict[str, Any] = {"model": model, "provider": info.provider, "license": info.license.lower(),
                             "sizes": None, "eval_results": [],
                             "evaluation": [], "datasets": []}
    if info.sizing_config:
        config = published_config(info.sizing_config)
        facts["sizes"] = {"parameters": parameter_count(config), "active_parameters": active_parameter_count(config),
                          "context_window": info.context_window}
    quant = _read("quantization")
    if quant and quant["model"].startswith(model):
        held = quant["held_out"]
        for scheme in quant["schemes"]:
            if scheme["scheme"] in ("float (as loaded)", "q8_0", "q4_1", "nf4"):
                facts["eval_results"].append(EvalResult(
                    task_type="text-generation", dataset_type="course_utils/passages", dataset_name="course passages",
                    dataset_split="held-out", metric_type="perplexity", metric_value=round(scheme["perplexity"], 2),
                    metric_name=f"perplexity ({scheme['scheme']}, {scheme['linear_bits_per_weight']:.2f} bits/weight)"))
        facts["evaluation"].append(
            f"Perplexity on {held['sequences']} held-out passages ({held['scored_tokens']} scored tokens) for "
            f"{len(quant['schemes'])} weight formats, recorded {quant['date']} (benchmarks/results/quantization.json).")
        facts["datasets"].append("course_utils/data/passages.jsonl")
    tools = _read("tools")
    if tools and tools["model"] == model:
        for mode, scores in tools["modes"].items():
            right = scores["right_arguments"]
            facts["eval_results"].append(EvalResult(
                task_type="text-generation", dataset_type="course_utils/tool_requests",
                dataset_name="course tool requests", metric_type="accuracy", metric_value=right["rate"],
                metric_name=f"right tool arguments, tool_choice={mode}"))
            facts["evaluation"].append(
                f"Tool calls with tool_choice={mode}: right arguments in {right['k']}/{right['n']} requests (95% CI "
                f"{right['ci95'][0]:.0%}-{right['ci95'][1]:.0%}), recorded {tools['date']} "
                f"(benchmarks/results/tools.json).")
        facts["datasets"].append("course_utils/data/tool_requests.jsonl")
    return facts


def prefilled(model: str, facts: dict[str, Any] | None = None) -> CardAnswers:
    """Answers pre-filled from :func:`measured_facts` (pass them in if already computed); the fields only
    people can answer are left empty."""
    facts = measured_facts(model) if facts is None else facts
    sizes = facts["sizes"]
    summary = f"{model} by {facts['provider']}" + (
        f", {sizes['parameters'] / 1e6:,.0f}M parameters ({sizes['active_parameters'] / 1e6:,.0f}M active per token), "
        f"a window of {sizes['context_window']:,} tokens" if sizes else "")
    license_id = facts["license"] if facts["license"] in LICENSES else ""
    return CardAnswers(model_id=model, summary=summary + ".", developers=facts["provider"], license=license_id,
                       evaluation=" ".join(facts["evaluation"]), datasets=list(facts["datasets"]))


def card_problems(answers: CardAnswers) -> list[str]:
    """One line per problem that would make the card incomplete or invalid (empty list: it can be written)."""
    problems = [f"'{LABELS[name]}' is required" for name in REQUIRED if not str(getattr(answers, name)).strip()]
    if answers.license and answers.license not in LICENSES:
        problems.append(f"license {answers.license!r} is not a Hub licence id; use one of {', '.join(LICENSES)}")
    if answers.license == "other" and not (answers.license_name.strip() and answers.license_link.strip()):
        problems.append("license 'other' needs a license name and a license link")
    if answers.license_link and not answers.license_link.startswith(("http://", "https://", "LICENSE")):
        problems.append(f"license link {answers.license_link!r} must be a URL or a LICENSE file in the repository")
    if answers.model_id and any(c.isspace() for c in answers.model_id):
        problems.append(f"model id {answers.model_id!r} must not contain spaces (it names the repository)")
    return problems


def render_card(answers: CardAnswers, eval_results: list[EvalResult] | None = None) -> ModelCard:
    """The card (metadata and Markdown) from huggingface_hub's template; ValueError listing every problem."""
    problems = card_problems(answers)
    if problems:
        raise ValueError("the model card is not complete: " + "; ".join(problems))
    data = ModelCardData(
        model_name=answers.model_id, license=answers.license, language=answers.language or None,
        license_name=answers.license_name or None, license_link=answers.license_link or None,
        base_model=answers.base_model or None, datasets=answers.datasets or None,
        eval_results=eval_results or None, library_name="transformers", pipeline_tag="text-generation")
    results = "\n".join(f"- {r.metric_name or r.metric_type} on {r.dataset_name}: {r.metric_value}"
                        for r in eval_results or [])
    return ModelCard.from_template(
        data, model_id=answers.model_id, model_summary=answers.summary, developers=answers.developers or None,
        direct_use=answers.intended_use, out_of_scope_use=answers.out_of_scope_use,
        training_data=answers.training_data or None, testing_metrics=answers.evaluation or None,
        testing_data=("Described by their datasheets in course_utils/data/README.md: " + ", ".join(answers.datasets))
        if answers.datasets else None,
        results=results or None, bias_risks_limitations=answers.limitations,
        bias_recommendations=answers.ethical_considerations or None, model_card_contact=answers.contact,
        license=answers.license)


def check_written_card(text: str) -> list[str]:
    """Problems in a written card: its metadata must parse, and ``model-index`` must hold well-formed results."""
    import yaml

    try:
        card = ModelCard(text)
    except (ValueError, yaml.YAMLError) as err:
        return [f"the card's metadata does not parse: {' '.join(str(err).split())[:160]}"]
    problems = []
    data = card.data.to_dict()
    if data.get("license") not in LICENSES:
        problems.append(f"metadata license {data.get('license')!r} is not a Hub licence id")
    for result in card.data.eval_results or []:
        if not isinstance(result.metric_value, (int, float)):
            problems.append(f"model-index result {result.metric_type} has a non-numeric value {result.metric_value!r}")
    body = re.sub(r"<!--.*?-->", "", card.text, flags=re.S)
    for heading in ("### Direct Use", "### Out-of-Scope Use", "## Bias, Risks, and Limitations"):
        section = body.split(heading + "\n", 1)[1].split("\n#", 1)[0] if heading + "\n" in body else ""
        if not section.strip() or section.strip().startswith(MISSING):
            problems.append(f"section {heading.strip('# ')!r} is empty")
    return problems


def load_answers(path: str | Path) -> dict[str, Any]:
    """Answers from a YAML file (keys are :class:`CardAnswers`' fields); ValueError naming unknown keys."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of field: answer")
    known = {f.name for f in fields(CardAnswers)}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(known))}")
    return loaded


def write_card(model: str, out: str | Path, answers: dict[str, Any] | None = None) -> ModelCard:
    """Pre-fill from what the course measured for ``model``, apply ``answers``, validate, write ``out``."""
    facts = measured_facts(model)
    merged = prefilled(model, facts)
    for name, value in (answers or {}).items():
        setattr(merged, name, value)
    card = render_card(merged, facts["eval_results"])
    problems = check_written_card(str(card))
    if problems:
        raise ValueError("the written card does not validate: " + "; ".join(problems))
    Path(out).write_text(str(card), encoding="utf-8")
    return card


def card_form(model: str, on_card: Callable[[ModelCard], None] | None = None) -> Any:
    """An ipywidgets form pre-filled for ``model``: edit the fields, press *Generate*; the card (or the
    list of problems) appears below. Returns the form (a VBox); ``form.fields`` maps field names to
    widgets, ``form.generate`` is the button and ``form.answers()`` reads the fields, so code can fill
    and click it too; ``form.card`` is the last card generated (None after a refusal)."""
    import ipywidgets as widgets

    facts = measured_facts(model)
    start = prefilled(model, facts)
    boxes: dict[str, Any] = {}
    for name, label in LABELS.items():
        value = getattr(start, name)
        if name == "license":
            boxes[name] = widgets.Dropdown(options=("",) + LICENSES, value=value, description=label)
        elif name in ("intended_use", "out_of_scope_use", "training_data", "evaluation", "limitations",
                      "ethical_considerations"):
            boxes[name] = widgets.Textarea(value=value, description=label, layout=widgets.Layout(width="95%"))
        else:
            boxes[name] = widgets.Text(value=value, description=label, layout=widgets.Layout(width="95%"))
    for box in boxes.values():
        box.style.description_width = "190px"
    button = widgets.Button(description="Generate", button_style="primary")
    output = widgets.Output()
    form = widgets.VBox([*boxes.values(), button, output])

    def answers() -> CardAnswers:
        return CardAnswers(**{name: box.value for name, box in boxes.items()}, datasets=start.datasets)

    def generate(_: Any) -> None:
        output.clear_output()
        with output:
            try:
                card = render_card(answers(), facts["eval_results"])
            except ValueError as err:
                print(err)
                form.card = None
                return
            form.card = card
            print(str(card))
            if on_card is not None:
                on_card(card)

    button.on_click(generate)
    form.fields, form.generate, form.output, form.card, form.answers = boxes, button, output, None, answers
    return form
