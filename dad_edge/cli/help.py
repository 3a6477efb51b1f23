"""What `dad-edge COMMAND --help` shows beyond the options: each default, and an example or two.

Applied to every sub-command by dad_edge/cli/__init__.py (apply_help), so that the command modules
stay as they are and every command gets the same treatment.
"""
from __future__ import annotations

import argparse
from typing import Dict

# Command -> examples shown under its options. Commands that work as written on the README's data.
EXAMPLES: Dict[str, str] = {
    "demo": "dad-edge demo --out runs/demo --minutes 4",
    "train": "dad-edge train --data my_part --out runs/my_part --minutes 30\n"
             "dad-edge train --print-config > train.toml   # edit, then:\n"
             "dad-edge train --config train.toml --minutes 60  # flags given override the file",
    "eval": "dad-edge eval runs/my_part/model.safetensors --data my_part --out runs/my_part/eval\n"
            "dad-edge eval model.onnx --good shots/ok --bad shots/reject   # no masks: image-level only",
    "info": "dad-edge info --preset compact --image-size 128 --json",
    "export": "dad-edge export runs/my_part/model.safetensors --format onnx --out model.onnx\n"
              "dad-edge export model.onnx --format engine --out engine.plan --half   # on the target GPU",
    "calibrate": "dad-edge calibrate model.onnx --data my_part\n"
                 "dad-edge calibrate model.onnx --good shots/ok --bad shots/reject",
    "predict": "dad-edge predict model.onnx my_part/test/ --save out/ --save-maps out/maps\n"
               "dad-edge predict model.onnx shots/*.png --sensitivity 0.7   # flag more than calibrated",
    "distill": "dad-edge distill --teacher runs/teacher/model.safetensors --data my_part --out runs/student",
    "stream": "dad-edge stream model.onnx --source 0 --events events.jsonl\n"
              "dad-edge stream model.onnx --source line.mp4 --out annotated.mp4 --no-display --threshold 0.4",
    "baseline": "dad-edge baseline --data my_part --method iforest --out runs/if",
    "compare": "dad-edge compare --data digits --methods diffusionad,iforest --classes 0,1 --minutes 1 "
               "--out runs/compare",
    "serve": "dad-edge serve model.onnx --http-port 8000 --grpc-port 8001   # Triton Inference Server, this host only",
    "benchmark": "dad-edge benchmark model.onnx --batch 1 8 32 --json bench.json\n"
                 "dad-edge benchmark engine.plan --frame-size 1080x1920   # a camera's frames, resize included",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; "(default: X)" after each option that has a default worth showing
    (not None or False, and not already said in its help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = getattr(action.default, "unset_default", action.default)  # cli/config.py's marker
        if ("default" in text or default is None or default is False or default is argparse.SUPPRESS
                or text == argparse.SUPPRESS or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def apply_help(sub: argparse._SubParsersAction) -> None:
    """Give every registered sub-command the formatter and its examples (epilog)."""
    for name, parser in sub.choices.items():
        parser.formatter_class = HelpFormatter
        if name in EXAMPLES and not parser.epilog:
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name].splitlines())
