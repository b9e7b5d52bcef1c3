"""``consensus``: one sentiment verdict from the Keras ``sentiment`` model and the rule-based ``vader``.

A chained expert (``needs: {sentiment: sentiment, vader: rules}`` in the
experts file): per document it receives ``{"text", "sentiment", "rules"}``,
the two judges' opinions, and answers::

    {"valence": 1.93, "label": "positive", "agree": true,
     "labels": {"sentiment": "positive", "rules": "positive"}}

``valence`` (-4..4, the human rating scale) is the mean (``weight`` 0.5 each,
fixed in advance) of the model's valence and VADER's compound score mapped
onto -4..4 by a line fitted on the training split only; its ``label`` uses the
sentiment model's bands (±0.5). ``agree`` says whether the
two judges gave the same label; each judge's own label is kept under ``labels``.

    python -m expertd.experts.consensus --evaluate [--data-dir data] [--models models]

measures it on the held-out split of the VADER ground truth (the one the
Keras models never saw), next to each judge alone, and writes
``models/consensus/metrics.json``, which ``experts()`` reports.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from expertd.experts.base import Expert, ExpertError, read_metrics

LABELS = ("negative", "neutral", "positive")
#: VADER's compound score (-1..1) onto the human rating scale (-4..4): the least-squares line
#: of the ratings on compound over the *training* split (``fit_rules_scale``; VADER itself
#: was never trained on these sentences, so this sees no held-out data).
RULES_SLOPE = 1.865
RULES_INTERCEPT = -0.177
NEGATIVE_BELOW = -0.5
POSITIVE_ABOVE = 0.5


def band(valence: float) -> str:
    """The label of a valence on the -4..4 scale: negative < -0.5 <= neutral <= 0.5 < positive."""
    if valence < NEGATIVE_BELOW:
        return "negative"
    if valence > POSITIVE_ABOVE:
        return "positive"
    return "neutral"


def rules_valence_of(compound: float) -> float:
    """VADER's compound score mapped onto the -4..4 human rating scale."""
    return RULES_SLOPE * compound + RULES_INTERCEPT


def _number(opinion: Any, key: str, judge: str) -> float:
    value = opinion.get(key) if isinstance(opinion, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExpertError(f"input {judge!r} has no numeric {key!r} (is it that expert's opinion?)")
    return float(value)


def _label(opinion: dict, judge: str) -> str:
    label = opinion.get("label")
    if label not in LABELS:
        raise ExpertError(f"input {judge!r} has no label among {', '.join(LABELS)}")
    return label


class ConsensusExpert(Expert):
    """Combines a model's and a rule-based judge's sentiment into one verdict and an agreement flag."""

    pure = True  # the same input and version, the same opinion: its opinions may be cached

    version = "1"
    description = ("Consensus of the sentiment model and VADER: valence (-4..4), label, and "
                   "whether the two judges agree")
    takes_opinions = True
    opinion_inputs = ("sentiment", "rules")
    opinion_schema = {
        "type": "object",
        "required": ["valence", "label", "agree", "labels"],
        "properties": {
            "valence": {"type": "number", "minimum": -4, "maximum": 4,
                        "description": "combined valence on the human rating scale, -4 to +4"},
            "label": {"type": "string", "enum": list(LABELS)},
            "agree": {"type": "boolean", "description": "whether the two judges gave the same label"},
            "labels": {"type": "object", "required": ["sentiment", "rules"],
                       "properties": {"sentiment": {"type": "string", "enum": list(LABELS)},
                                      "rules": {"type": "string", "enum": list(LABELS)}},
                       "description": "each judge's own label"},
        },
        "additionalProperties": False,
    }

    def __init__(self, name: str | None = None, *, weight: float = 0.5,
                 models_dir: str | None = None, **options) -> None:
        """``weight``: the model's share of the valence (VADER has the rest), 0..1.

        ``models_dir``: where ``--evaluate`` saved ``<name>/metrics.json``.
        """
        super().__init__(name, **options)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise TypeError(f"ConsensusExpert option weight must be a number in 0..1, not {weight!r}")
        self.weight = float(weight)
        self.models_dir = Path(models_dir) if models_dir else None

    def predict(self, inputs: Sequence[dict]) -> list[dict]:
        """One verdict per ``{"sentiment": opinion, "rules": opinion}`` input."""
        return [self.combine(item["sentiment"], item["rules"]) for item in inputs]

    def combine(self, sentiment: dict, rules: dict) -> dict:
        """The verdict of two opinions: the sentiment expert's and VADER's."""
        model_valence = _number(sentiment, "valence", "sentiment")
        rules_valence = rules_valence_of(_number(rules, "compound", "rules"))
        labels = {"sentiment": _label(sentiment, "sentiment"), "rules": _label(rules, "rules")}
        valence = self.weight * model_valence + (1.0 - self.weight) * rules_valence
        return {"valence": round(valence, 4), "label": band(valence),
                "agree": labels["sentiment"] == labels["rules"], "labels": labels}

    def metrics(self) -> dict:
        """The held-out evaluation ``--evaluate`` saved (``{}`` before it has run)."""
        if self.models_dir is None:
            return {}
        return read_metrics(self.models_dir / self.name)


# -- evaluation ------------------------------------------------------------------

def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's r of two equally long sequences."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else float("nan")


def _judge_metrics(valences: list[float], labels: list[str], truth: list[float]) -> dict:
    truth_labels = [band(v) for v in truth]
    return {
        "heldout_pearson_r": round(pearson(valences, truth), 4),
        "heldout_mae": round(sum(abs(v - t) for v, t in zip(valences, truth)) / len(truth), 4),
        "label_accuracy": round(sum(a == b for a, b in zip(labels, truth_labels)) / len(truth), 4),
    }


def fit_rules_scale(train: list, vader: Expert) -> dict:
    """The least-squares line of the human ratings on VADER's compound score, on ``train``."""
    compounds = [o["compound"] for o in vader.predict([text for text, _, _ in train])]
    ratings = [rating for _, rating, _ in train]
    mc, mr = sum(compounds) / len(compounds), sum(ratings) / len(ratings)
    slope = (sum((c - mc) * (r - mr) for c, r in zip(compounds, ratings))
             / sum((c - mc) ** 2 for c in compounds))
    return {"slope": round(slope, 4), "intercept": round(mr - slope * mc, 4), "n_train": len(train)}


def evaluate(data_dir: str | Path = "data", models: str | Path = "models",
             weight: float = 0.5) -> dict:
    """Consensus and each judge alone on the held-out split, against the human ratings."""
    from expertd.experts.data import DATASET, load_ground_truth
    from expertd.experts.keras_text import SentimentExpert
    from expertd.experts.train import split
    from expertd.experts.vader import VaderExpert

    train, heldout = split(load_ground_truth(data_dir))
    texts = [text for text, _, _ in heldout]
    truth = [valence for _, valence, _ in heldout]
    sentiment = SentimentExpert("sentiment", model_dir=str(Path(models) / "sentiment"))
    vader = VaderExpert("vader")
    sentiment.load()
    vader.load()
    model_opinions, rule_opinions = [], []
    for start in range(0, len(texts), 512):
        chunk = texts[start:start + 512]
        model_opinions.extend(sentiment.predict(chunk))
        rule_opinions.extend(vader.predict(chunk))
    consensus = ConsensusExpert("consensus", weight=weight)
    verdicts = consensus.predict([{"text": t, "sentiment": s, "rules": r}
                                  for t, s, r in zip(texts, model_opinions, rule_opinions)])
    agree = [v["agree"] for v in verdicts]
    truth_labels = [band(v) for v in truth]

    def accuracy(where: list[bool]) -> float | None:
        hits = [v["label"] == t for v, t, w in zip(verdicts, truth_labels, where) if w]
        return round(sum(hits) / len(hits), 4) if hits else None

    return {
        "consensus": _judge_metrics([v["valence"] for v in verdicts],
                                    [v["label"] for v in verdicts], truth),
        "sentiment": _judge_metrics([o["valence"] for o in model_opinions],
                                    [o["label"] for o in model_opinions], truth),
        "vader": _judge_metrics([rules_valence_of(o["compound"]) for o in rule_opinions],
                                [o["label"] for o in rule_opinions], truth),
        "agreement_rate": round(sum(agree) / len(agree), 4),
        "label_accuracy_when_agree": accuracy(agree),
        "label_accuracy_when_disagree": accuracy([not a for a in agree]),
        "weight": weight,
        "label_bands": "negative: valence < -0.5; positive: valence > 0.5; else neutral "
                       "(vader: its own label, compound ±0.05)",
        "rules_scale": {"slope": RULES_SLOPE, "intercept": RULES_INTERCEPT,
                        "fitted_on_train": fit_rules_scale(train, vader)},
        "n_heldout": len(heldout),
        "dataset": DATASET,
        "split": "the held-out 10% of experts.train.split (never seen by the Keras models)",
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m expertd.experts.consensus --evaluate``: write the held-out metrics file."""
    parser = argparse.ArgumentParser(prog="python -m expertd.experts.consensus",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--evaluate", action="store_true", required=True,
                        help="measure consensus and each judge on the held-out split")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", default=None, help="default: MODELS/consensus/metrics.json")
    args = parser.parse_args(argv)
    metrics = evaluate(args.data_dir, args.models)
    out = Path(args.out or Path(args.models) / "consensus" / "metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: metrics[k] for k in ("consensus", "sentiment", "vader", "agreement_rate")}))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
