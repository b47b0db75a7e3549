"""Rebuilds the guard's classifier (core/guard_model/guard_model.npz) from the raw public data.

    .venv/bin/python -m scripts.train_guard var/guard-data [--out core/guard_model/guard_model.npz]

The raw directory holds the files core/guard_model/README.md lists (never committed). Training is
logistic regression over core.guard.features, fitted with AdaGrad in numpy: deterministic for a
given directory, a few seconds on one core. Every text of a held-out test set is removed from
training, so bench/guard_quality.py measures on prompts the model has not seen.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.guard import RULES, LinearModel, features, normalise
from core.settings import PROJECT_ROOT

XQUAD_LANGUAGES = ("en", "de", "es", "ru")
DEFAULT_OUT = PROJECT_ROOT / "core" / "guard_model" / "guard_model.npz"
N_BUCKETS = 2**18
EPOCHS = 3
LEARNING_RATE = 0.5
L2 = 1e-6
# The intercept learns slowly: at the learning rate of the weights it drifted to +2.4 under the class
# weights, so a text with few n-grams ("Show me") scored as an attack on its intercept alone.
BIAS_RATE = 0.01
# Calibration: the intercept is shifted so that the model alone says 0.5 where it refuses at most this
# share of honest prompts full of trigger words (NotInject, WildGuard's benign, role prompts) from a source
# it was not trained on. The rules catch the plain attacks; the classifier only adds what it is sure of.
CALIBRATION_FPR = 0.02
HARD_BENIGN_SOURCES = frozenset({"notinject", "wildguard-benign", "awesome-chatgpt-prompts"})


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1: injection or jailbreak, 0: benign
    source: str


def _jsonl(path: Path, source: str) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(str(r.get("text", r.get("prompt"))), int(r["label"]), source) for r in rows]


def _xquad_questions(raw_dir: Path, part: int) -> list[Example]:
    """XQuAD questions, honest prompts in four languages. A question and its translations share an id;
    ids sorted, every other one is held out, so no translation of a test question is trained on."""
    examples = []
    for lang in XQUAD_LANGUAGES:
        data = json.loads((raw_dir / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        qas = sorted((qa for a in data for p in a["paragraphs"] for qa in p["qas"]), key=lambda qa: qa["id"])
        examples += [Example(qa["question"], 0, f"xquad-{lang}") for qa in qas[part::2]]
    return examples


def xquad_paragraphs(raw_dir: Path) -> list[Example]:
    """XQuAD's Wikipedia paragraphs: honest documents, never trained on."""
    examples = []
    for lang in XQUAD_LANGUAGES:
        data = json.loads((raw_dir / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        examples += [Example(p["context"], 0, f"xquad-{lang}") for a in data for p in a["paragraphs"]]
    return examples


def _awesome_prompts(raw_dir: Path, part: int) -> list[Example]:
    """Role-play prompts people give chat models ("I want you to act as a travel guide"): honest uses of
    the phrases injections also use. The collection holds a DAN jailbreak too; rows the guard's own
    rules refuse are left out rather than relabelled. Every other row is held out."""
    with (raw_dir / "awesome_chatgpt_prompts.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    honest = [
        r["prompt"] for r in rows if not any(rule.search(normalise(r["prompt"]).text) for _, rule in RULES)
    ]
    return [Example(text, 0, "awesome-chatgpt-prompts") for text in honest[part::2]]


def _piguard_benign(raw_dir: Path, part: int) -> list[Example]:
    """NotInject (benign prompts built around the trigger words injections use: "Can I ignore this
    warning?") and WildGuard's benign prompts, from the PIGuard repository. Every other one is held
    out, to measure over-defence on prompts the model has not seen."""
    examples = []
    for name in ("NotInject_one", "NotInject_two", "NotInject_three", "wildguard"):
        rows = json.loads((raw_dir / f"piguard_{name}.json").read_text(encoding="utf-8"))
        source = "notinject" if name.startswith("NotInject") else "wildguard-benign"
        examples += [Example(r["prompt"], 0, source) for r in rows[part::2] if int(r.get("label", 0)) == 0]
    return examples


def _rubq(path: Path) -> list[Example]:
    return [Example(q["question_text"], 0, "rubq") for q in json.loads(path.read_text(encoding="utf-8"))]


def _key(text: str) -> str:
    return " ".join(normalise(text).text.lower().split())


def _dedupe(examples: list[Example], exclude: set[str] | None = None) -> list[Example]:
    seen = set(exclude or ())
    kept = []
    for example in examples:
        key = _key(example.text)
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept


def load_test(raw_dir: Path) -> dict[str, list[Example]]:
    """The held-out sets by name: deepset's published test split, PromptShield's test split minus
    anything in its train split, honest questions in English, German, Spanish and Russian."""
    promptshield_train = {_key(e.text) for e in _jsonl(raw_dir / "promptshield_train.jsonl", "")}
    return {
        "deepset-test": _dedupe(_jsonl(raw_dir / "deepset_test.jsonl", "deepset")),
        "promptshield-test": _dedupe(
            _jsonl(raw_dir / "promptshield_test.jsonl", "promptshield"), exclude=promptshield_train
        ),
        "xquad-questions": _xquad_questions(raw_dir, part=1),
        "rubq-test-questions": _rubq(raw_dir / "RuBQ_1.0_test.json"),
        "awesome-prompts-test": _awesome_prompts(raw_dir, part=1),
        "notinject+wildguard-test": _piguard_benign(raw_dir, part=1),
    }


def load_train(raw_dir: Path) -> list[Example]:
    held_out = {_key(e.text) for examples in load_test(raw_dir).values() for e in examples}
    examples = [
        *_jsonl(raw_dir / "deepset_train.jsonl", "deepset"),
        *_jsonl(raw_dir / "promptshield_train.jsonl", "promptshield"),
        *_xquad_questions(raw_dir, part=0),
        *_rubq(raw_dir / "RuBQ_1.0_dev.json"),
        *_awesome_prompts(raw_dir, part=0),
        *_piguard_benign(raw_dir, part=0),
    ]
    return _dedupe(examples, exclude=held_out)


def fit(
    examples: list[Example], n_buckets: int = N_BUCKETS, epochs: int = EPOCHS, seed: int = 0
) -> LinearModel:
    rows = [features(normalise(e.text).text, n_buckets) for e in examples]
    labels = np.array([e.label for e in examples], dtype=np.float32)
    # Classes weighted to balance: benign prompts outnumber attacks in every source.
    positives = float(labels.sum())
    class_weight = {1.0: len(labels) / (2 * positives), 0.0: len(labels) / (2 * (len(labels) - positives))}
    weights = np.zeros(n_buckets, dtype=np.float64)
    squared = np.full(n_buckets, 1e-8)
    bias, bias_squared = 0.0, 1e-8
    order = list(range(len(rows)))
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            buckets, values = rows[i]
            z = float(weights[buckets] @ values) + bias
            p = 1.0 / (1.0 + np.exp(-z))
            error = (p - labels[i]) * class_weight[float(labels[i])]
            grad = error * values + L2 * weights[buckets]
            squared[buckets] += grad * grad
            weights[buckets] -= LEARNING_RATE * grad / np.sqrt(squared[buckets])
            bias_squared += error * error
            bias -= BIAS_RATE * error / np.sqrt(bias_squared)
    return LinearModel(weights.astype(np.float32), bias, {})


def calibration_shift(examples: list[Example], target_fpr: float = CALIBRATION_FPR) -> float:
    """How far to lower the intercept. For each source of hard honest prompts, a fit without that source
    scores it: the logit above which at most target_fpr of it falls is where the model alone meets
    honest text of a kind it has not seen. The median of these cuts is kept: the largest follows the one
    source (role prompts, "I want you to act as ...") that looks most like an attack to a model that never
    saw it."""
    cuts = []
    for source in sorted(HARD_BENIGN_SOURCES):
        model = fit([e for e in examples if e.source != source])
        logits = sorted(
            float(model.weights[b] @ v) + model.bias
            for b, v in (
                features(normalise(e.text).text, model.n_buckets) for e in examples if e.source == source
            )
        )
        cuts.append(logits[min(int((1.0 - target_fpr) * len(logits)), len(logits) - 1)])
    return max(float(np.median(cuts)), 0.0)


def _digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in paths}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()

    started = time.perf_counter()
    examples = load_train(args.raw_dir)
    shift = calibration_shift(examples)
    model = fit(examples, epochs=args.epochs)
    model.bias -= shift
    counts: dict[str, list[int]] = {}
    for e in examples:
        counts.setdefault(e.source, [0, 0])[e.label] += 1
    model.meta = {
        "version": 1,
        "features": "char 3-5-grams + word 1-2-grams, hashed (core.guard.features)",
        "n_buckets": N_BUCKETS,
        "epochs": args.epochs,
        "calibration": {
            "target_fpr": CALIBRATION_FPR,
            "sources": sorted(HARD_BENIGN_SOURCES),
            "shift": shift,
        },
        "train_counts": {source: {"benign": b, "injection": i} for source, (b, i) in sorted(counts.items())},
        "raw_sha256": _digest(
            sorted([*args.raw_dir.glob("*.jsonl"), *args.raw_dir.glob("*.json"), *args.raw_dir.glob("*.csv")])
        ),
    }
    model.save(args.out)
    elapsed = time.perf_counter() - started
    print(
        f"trained on {len(examples)} texts {model.meta['train_counts']} in {elapsed:.1f}s; "
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)"
    )


if __name__ == "__main__":
    main()
