"""The ``msprior`` command: small tools beside the workflow.

``msprior info``                     versions, device, threads
``msprior check-config FILE ...``    validate config files (merged in order) like the
                                     workflow does, without running anything
``msprior fetch-published DIR``      download the authors' networks into DIR, checked
                                     against the recorded sha256
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[2]


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _info(args) -> int:
    from msprior.io import provenance
    from msprior.training import select_device

    info = provenance()
    info["device"] = str(select_device("auto"))
    print(json.dumps(info, indent=2))
    return 0


def _check_config(args) -> int:
    import yaml

    from msprior.config import from_dict, schema_error

    schema_path = REPO / "workflow" / "schemas" / "config.schema.yaml"
    config: dict = {}
    for path in [REPO / "config" / "config.yaml", *args.files]:
        config = _merge(config, yaml.safe_load(Path(path).read_text()) or {})
    problem = schema_error(config, yaml.safe_load(schema_path.read_text()))
    if problem:
        print(f"invalid config: {problem}", file=sys.stderr)
        return 1
    try:
        cfg = from_dict(config)
    except ValueError as err:
        print(f"invalid config: {err}", file=sys.stderr)
        return 1
    print(f"config OK: run {cfg.run!r}, outputs in {cfg.run_dir}")
    return 0


def _fetch_published(args) -> int:
    from msprior import published

    models = published.published_models(setting=args.setting)
    files = published.fetch_published(args.dest, models, base_url=args.url)
    print(f"{len(files)} files verified in {args.dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="msprior",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device and threads").set_defaults(run=_info)
    check = sub.add_parser(
        "check-config", help="validate config files, merged in order"
    )
    check.add_argument("files", nargs="*", type=Path)
    check.set_defaults(run=_check_config)
    fetch = sub.add_parser("fetch-published", help="download the authors' networks")
    fetch.add_argument("dest", type=Path)
    fetch.add_argument(
        "--setting",
        default=None,
        help="celebA_160x160_gray or celebA_320x320_gray (default: both)",
    )
    fetch.add_argument(
        "--url", default=None, help="base URL of the release's denoisers/"
    )
    fetch.set_defaults(run=_fetch_published)
    args = parser.parse_args(argv)
    if getattr(args, "url", "unset") is None:
        from msprior.published import DEFAULT_BASE_URL

        args.url = DEFAULT_BASE_URL
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
