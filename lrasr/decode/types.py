"""Decoding results shared by the greedy and beam decoders, chunk merging and the output writers."""

from __future__ import annotations

from dataclasses import dataclass, field

# wav2vec 2.0's feature encoder has a stride of 320 samples: one CTC frame per 20 ms at 16 kHz
FRAME_SECONDS = 0.02


@dataclass(frozen=True)
class Word:
    """One recognized word and where it was heard, in seconds from the start of the recording."""

    text: str
    start: float
    end: float

    def shifted(self, offset: float) -> "Word":
        return Word(self.text, round(self.start + offset, 3), round(self.end + offset, 3))


@dataclass
class Hypothesis:
    """A transcript with word timings; ``words`` joined by spaces give ``text``."""

    text: str
    words: list[Word] = field(default_factory=list)

    def shifted(self, offset: float) -> "Hypothesis":
        return Hypothesis(self.text, [w.shifted(offset) for w in self.words])


def merge_hypotheses(parts: list[Hypothesis]) -> Hypothesis:
    """Concatenate chunk hypotheses (already shifted to file time) in order."""
    text = " ".join(p.text for p in parts if p.text)
    return Hypothesis(text, [w for p in parts for w in p.words])
