"""The training progress bar."""

from __future__ import annotations

import sys
from typing import Any

import click


class ProgressReporter:
    """The trainer's progress as a tqdm bar (loss, bits/char, chars/s, ETA) on stderr."""

    def __init__(self, quiet: bool, max_seconds: float = 0.0) -> None:
        self.quiet = quiet
        self.max_seconds = max_seconds  # a time budget: the bar's end is where time runs out
        self.total: int | None = None
        self.first: tuple[int, float] | None = None  # (step, elapsed_s) of the first record
        self.bar: Any = None

    def start(self, step: int, total: int | None) -> None:
        if self.quiet:
            return
        from tqdm import tqdm  # noqa: PLC0415 - only the train command needs it

        self.total = total
        self.bar = tqdm(
            total=total,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def update(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        shown = {}
        if "train_loss" in record:
            shown["loss"] = f"{record['train_loss']:.3f}"
            shown["bpc"] = f"{record['train_bpc']:.3f}"
            shown["chars/s"] = f"{record['chars_per_s']:,.0f}"
        if "val_loss" in record:
            shown["val"] = f"{record['val_loss']:.3f}"
            self.message(
                f"step {record['step']}: val loss {record['val_loss']:.4f} nats/char, "
                f"{record['val_bpc']:.4f} bpc, perplexity {record['val_ppl']:.2f}"
            )
        self.bar.set_postfix(shown, refresh=False)
        self.bar.total = self.projected_total(record)
        self.bar.update(record["step"] - self.bar.n)

    def projected_total(self, record: dict[str, Any]) -> int | None:
        """The step the run will end at: the step limit, or sooner where the time budget runs
        out at the pace since the first record."""
        if not self.max_seconds or "elapsed_s" not in record:
            return self.total
        step, elapsed = record["step"], record["elapsed_s"]
        self.first = self.first or (step, elapsed)
        if elapsed <= self.first[1]:
            return self.total
        rate = (step - self.first[0]) / (elapsed - self.first[1])
        by_time = step + round(max(self.max_seconds - elapsed, 0.0) * rate)
        return by_time if self.total is None else min(self.total, by_time)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
