"""`charlm gradcheck`: a finite-difference gradient check of the configured model."""

from __future__ import annotations

import json

import click

from charlm.cli.group import cli
from charlm.cli.options import config_options
from charlm.config import Config


@cli.command()
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=None,
    help="Check this many layers instead of model.num_layers (fewer is faster).",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=None,
    help="Check this hidden size instead of model.hidden_size (e.g. 8 takes well under 1 s).",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Time steps in the checked window (backpropagated through, with a carried-in state).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the per-tensor errors as JSON.")
@config_options
def gradcheck(
    cfg: Config, layers: int | None, hidden: int | None, seq_len: int, as_json: bool
) -> None:
    """Finite-difference gradient check (float64) of the configured model.

    Checks every parameter and the carried-in state of the configured model (cell, size,
    layers, embedding, dropout; a random 12-character vocabulary), a sample of entries per
    tensor; exit status 1 if the error exceeds 1e-6. The default 2x256 LSTM takes seconds;
    --hidden and --layers check a smaller model quickly.
    """
    import dataclasses  # noqa: PLC0415

    from charlm.device import get_device  # noqa: PLC0415
    from charlm.gradcheck import gradcheck as check  # noqa: PLC0415

    layers = cfg.model.num_layers if layers is None else layers
    hidden = cfg.model.hidden_size if hidden is None else hidden
    spec = dataclasses.replace(cfg.model, num_layers=layers, hidden_size=hidden)
    # float64: `auto` takes the NumPy kernels there; train.kernels=compiled checks numba's
    device = get_device("cpu", cfg.train.kernels, "float64")
    result = check(spec, seq_len=seq_len, resets=cfg.data.mode == "lines", device=device)
    if as_json:
        click.echo(json.dumps({"max_relative_error": result.max_error, "errors": result.errors}))
    else:
        what = f"{cfg.model.cell}" + (" (reset-after)" if cfg.model.gru_reset_after else "")
        emb = f", E={spec.embedding_size}" if spec.embedding_size else ""
        click.echo(
            f"{what}, {layers} layers, H={hidden}{emb}, T={seq_len}, "
            f"{'compiled' if device.compiled else 'numpy'} kernels: "
            f"{len(result.errors)} tensors checked"
        )
        click.echo(f"max relative error: {result.max_error:.3e} (in {result.worst})")
    if not result.max_error <= 1e-6:
        raise click.ClickException(
            f"gradient check failed: max relative error {result.max_error:.3e} > 1e-6 "
            f"(in {result.worst})"
        )
