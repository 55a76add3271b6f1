"""mkdocs hooks of the docs site (``mkdocs.yml``: ``hooks: [dev/docs_hooks.py]``), run by ``make docs``.

- one page per registered model, generated from the registry at build time (``models/<name>.md``) with its
  parameters and GFLOPs (:func:`vision_attn.run.bench.results.model_stats`), pretrained tags, parity tests and
  every ``results/*.csv`` row about it;
- tables of measured numbers rendered from ``results/*.csv``: a line ``{{ results FILE columns=a,b where=k=v|w
  labels=a:Label;b:Other }}`` in a page becomes the table, followed by its data file, machine, date and commit;
  ``{{ data_size_report FILE baseline=MODEL }}`` renders a data-size sweep's tables with the sweep's own report code;
- ``changelog.md`` from ``CHANGELOG.md``; the CSVs are published under ``results/``;
- any top-level ``docs/*.md`` page not in ``nav`` is appended to the "More" section, so new pages appear without
  editing ``mkdocs.yml``.
"""

from __future__ import annotations

import functools
import re
import shlex
import tempfile
from pathlib import Path
from typing import Dict, List

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
_DIRECTIVE = re.compile(r"^\{\{ *(results|data_size_report) +(.*?) *\}\}$", re.MULTILINE)
CONTEXT = ("date", "commit", "machine")

# (name prefix or exact name, family title, reference and parity, how it is tested)
FAMILIES = [
    (
        "vit_nano_patch4_32",
        "Vision Transformer, CPU size",
        "Our CPU-sized peer of the quickstart; same code as the timm-parity ViTs.",
        "`tests/models/test_models.py`, `tests/tasks/test_tasks.py` (trains in the quickstart config)",
    ),
    (
        "vit_",
        "Vision Transformer (Dosovitskiy et al. 2021)",
        "timm's hyper-parameters and key layout: timm's weights give timm's outputs (same weights, 224 px and at a "
        "resampled size); `forward_intermediates` / `features_only` equal timm's.",
        "`tests/models/test_models.py::test_vit_outputs_equal_timm_for_the_same_weights_at_224`, "
        "`test_registered_vits_have_timms_exact_architecture`, `tests/models/test_features.py`",
    ),
    (
        "resnet10_narrow_cifar",
        "ResNet, CPU size",
        "The CNN peer of the quickstart and the data-size study's baseline (timm's `ResNet` with one basic block per stage).",
        "`tests/models/test_models.py`, `tests/layers/test_conv_attention.py` (a trained one converted to attention)",
    ),
    (
        "resnet",
        "ResNet (He et al. 2016), timm's",
        "timm's `ResNet`; torchvision and timm state dicts load as they are and give torchvision's outputs.",
        "`tests/models/test_models.py::test_resnets_equal_torchvision_for_the_same_weights`, "
        "`test_resnet18_cifar_keeps_32px_resolution_in_the_stem`",
    ),
    (
        "sasa_",
        "Stand-alone self-attention ResNet (Ramachandran et al. 2019)",
        "Bottlenecks whose 3x3 conv is `LocalSelfAttention2d` (k=7, 8 heads); the paper's parameter counts. The layer "
        "equals brute-force masked global attention (values and gradients).",
        "`tests/layers/test_pixel_attention.py::test_local_attention_equals_brute_force_masked_global_attention`, "
        "`test_sasa_models_have_the_papers_size_and_no_3x3_convs_outside_the_stem`",
    ),
    (
        "nonlocal_",
        "Non-local ResNet (Wang et al. 2018)",
        "`resnet18_cifar` plus `NonLocalBlock2d` after stages 2 and 3; gamma starts at 0, so a `resnet18_cifar` "
        "checkpoint loads and gives the same outputs.",
        "`tests/layers/test_pixel_attention.py::test_nonlocal_resnet_is_resnet18_cifar_plus_identity_blocks`",
    ),
    (
        "detr_",
        "DETR (Carion et al. 2020)",
        "The official network on the shared core; official and Hugging Face checkpoints load through an explicit, "
        "shape-checked mapping and give Hugging Face's outputs exactly (relative error 0.0, padded batch, aux outputs).",
        "`tests/models/test_detr.py::test_outputs_equal_hugging_face_detr_for_the_same_weights_on_a_padded_batch`, "
        "`test_official_checkpoint_loads_by_name_and_reproduces_the_reference`",
    ),
    (
        "sagan_",
        "SA-GAN (Zhang et al. 2019)",
        "Generator and projection discriminator with SAGAN's official attention (unscaled q.k, keys and values 2x2 "
        "max-pooled), spectral norm on every weight, EMA generator.",
        "`tests/models/test_sagan_attention.py::test_registered_attention_is_the_papers`, `tests/models/test_sagan.py`",
    ),
]


def _family(name: str):
    return next(f for f in FAMILIES if name.startswith(f[0]))  # the first match: exact names come before prefixes


@functools.cache
def _stats(name: str) -> Dict[str, object]:
    from vision_attn.run.bench.results import model_stats

    return model_stats(name)


def _rows_about(name: str) -> Dict[str, List[dict]]:
    from vision_attn.run.bench.results import read_rows

    return {p.stem: [r for r in read_rows(p) if r.get("model") == name] for p in sorted(RESULTS.glob("*.csv"))}


def _csv_link(stem: str, page_depth: int) -> str:
    return f"[`results/{stem}.csv`]({'../' * page_depth}results/{stem}.csv)"


def _context(rows: List[dict]) -> str:
    parts = []
    for col in CONTEXT:
        vals = sorted({r.get(col, "") for r in rows if r.get(col, "")})
        parts.append(f"{col} {', '.join(vals) if vals else 'not recorded'}")
    return "; ".join(parts)


def _results_tables(name: str) -> str:
    from vision_attn.run.bench.results import REQUIRED, render_table

    out = []
    for stem, rows in _rows_about(name).items():
        if not rows:
            continue
        skip = set(REQUIRED) - {"img_size", "throughput"} | {
            "notes",
            "cpu",
            "torch",
            "timm",
            "ours",
            "device",
            "cell_hash",
            "code_version",
            "params",
            "gflops",
        }
        cols = [c for c in rows[0] if c not in skip and any(r.get(c, "") for r in rows)]
        out += [
            f"**{stem.split('-', 1)[0]}** ({_csv_link(stem, 1)}; {_context(rows)})",
            "",
            render_table(rows, cols),
            "",
        ]
    return "\n".join(out) if out else "No offline benchmark has measured this model yet."


def model_page(name: str) -> str:
    """The markdown of ``models/<name>.md``."""
    from vision_attn.models.pretrained_cfgs import PRETRAINED_CFGS
    from vision_attn.models.registry import _MODELS

    prefix, title, parity, tests = _family(name)
    factory = _MODELS[name]
    stats = _stats(name)
    tags = PRETRAINED_CFGS.get(name, {})
    lines = [
        f"# {name}",
        "",
        f"*{title}.* {(factory.__doc__ or '').strip().splitlines()[0]}",
        "",
        "| parameters | GFLOPs (one image, default size) | default input |",
        "|---:|---:|---:|",
        f"| {stats['params'] / 1e6:.2f}M | {stats['gflops']:.2f} | {stats['img_size']} |",
        "",
        "GFLOPs: torch's `FlopCounterMode` on one forward (a multiply-add is 2 FLOPs)"
        + ("; the SA-GAN's is its generator's, for one sample." if name.startswith("sagan_") else "."),
        "",
        "```python",
        "import vision_attn as va",
        f'm = va.create_model("{name}")',
        "```",
        "",
        "## Pretrained weights",
        "",
    ]
    if tags:
        lines += ["| name | classes | input | source |", "|---|---:|---|---|"]
        for tag, cfg in tags.items():
            src = cfg.get("hf_hub_id") or cfg.get("url") or "none"
            lines.append(
                f"| `{name}.{tag}` | {cfg.get('num_classes', '')} | {'x'.join(map(str, cfg['input_size'][1:]))} | `{src}` |"
            )
        lines += ["", f'The first is the default of `create_model("{name}", pretrained=True)`.']
    else:
        lines.append("No published weights: train it (see the tutorials) or pass `pretrained=PATH_OR_URL`.")
    lines += [
        "",
        "## Parity and tests",
        "",
        parity,
        "",
        f"Tested in {tests}.",
        "",
        "## Our results on the offline benchmarks",
        "",
        _results_tables(name),
        "",
        "## Architecture and options",
        "",
        f"::: {factory.__module__}.{name}",
        "    options:",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "      show_source: false",
        "",
    ]
    return "\n".join(lines)


def models_index(names: List[str]) -> str:
    lines = [
        "# Models",
        "",
        "Every registered name (`vision_attn.list_models()`), generated from the registry when the "
        "site is built. Parameters and GFLOPs at the model's default input size.",
        "",
        "| name | family | parameters | GFLOPs | input |",
        "|---|---|---:|---:|---|",
    ]
    for name in names:
        s = _stats(name)
        lines.append(
            f"| [{name}]({name}.md) | {_family(name)[1]} | {s['params'] / 1e6:.2f}M | {s['gflops']:.2f} | {s['img_size']} |"
        )
    return "\n".join(lines) + "\n"


def _parse_args(text: str) -> Dict[str, str]:
    parts = shlex.split(text)
    args = {"file": parts[0]}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        args[k] = v
    return args


def _render_results(args: Dict[str, str], depth: int) -> str:
    from vision_attn.run.bench.results import read_rows, render_table

    path = RESULTS / f"{args['file']}.csv"
    if not path.is_file():
        raise ValueError(f"docs: {{{{ results {args['file']} }}}} names {path}, which does not exist")
    rows = read_rows(path)
    if "where" in args:
        col, _, vals = args["where"].partition("=")
        rows = [r for r in rows if r.get(col, "") in vals.split("|")]
    if not rows:
        raise ValueError(f"docs: {{{{ results {args['file']} where={args.get('where')} }}}} selects no row")
    cols = args["columns"].split(",") if "columns" in args else list(rows[0])
    unknown = [c for c in cols if c not in rows[0]]
    if unknown:
        raise ValueError(f"docs: {path.name} has no column(s) {unknown}; it has {list(rows[0])}")
    labels = dict(kv.split(":", 1) for kv in args["labels"].split(";")) if args.get("labels") else {}
    # the harness's convention: a ratio column reads "ours" on our own row
    rows = [{**r, **{c: "ours" for c in cols if "over" in c and r.get("ours") == "True"}} for r in rows]
    notes = sorted({r.get("notes", "") for r in rows if r.get("notes", "")})
    tail = (
        f"*Data: {_csv_link(args['file'], depth)}; {_context(rows)}"
        + (f"; {' / '.join(notes)}" if notes else "")
        + ".*"
    )
    return render_table(rows, cols, labels) + "\n\n" + tail


def _render_data_size(args: Dict[str, str], depth: int) -> str:
    from vision_attn.run.bench.results import read_rows
    from vision_attn.run.data_size.journal import RESULT_COLUMNS
    from vision_attn.run.data_size.report import write_report

    rows = read_rows(RESULTS / f"{args['file']}.csv")
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "results.csv", "w") as f:  # the sweep's own journal format, then its own report
            f.write(",".join(RESULT_COLUMNS) + "\n")
            for r in rows:
                f.write(",".join(r.get(c, "") for c in RESULT_COLUMNS) + "\n")
        md, _ = write_report(tmp, baseline=args.get("baseline"))
        text = md.read_text().split("\n", 2)[2]  # drop the report's own title
    text = text.replace("Plot: `data_size.png`", "Plot: the figure below")
    return text + f"\n*Data: {_csv_link(args['file'], depth)}; {_context(rows)}.*\n"


def on_config(config, **kwargs):
    import vision_attn

    nav = config["nav"]
    names = vision_attn.list_models()
    for section in nav:
        if isinstance(section, dict) and "Models" in section:
            section["Models"] = [{"Overview": "models/index.md"}] + [{n: f"models/{n}.md"} for n in names]
    listed = set(_nav_files(nav))
    extra = sorted(p.name for p in Path(config["docs_dir"]).glob("*.md") if p.name not in listed)
    more = next((s for s in nav if isinstance(s, dict) and "More" in s), None)
    if more is not None:
        more["More"] = list(more["More"] or []) + extra  # new top-level pages appear without editing mkdocs.yml
        if not more["More"]:
            nav.remove(more)
    return config


def _nav_files(nav) -> List[str]:
    out = []
    for item in nav or []:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                out += _nav_files(v) if isinstance(v, list) else [v]
    return out


def on_files(files, config, **kwargs):
    import vision_attn

    names = vision_attn.list_models()
    files.append(File.generated(config, "models/index.md", content=models_index(names)))
    for name in names:
        files.append(File.generated(config, f"models/{name}.md", content=model_page(name)))
    changelog = ROOT / "CHANGELOG.md"
    text = changelog.read_text() if changelog.is_file() else "# Changelog\n\nNo `CHANGELOG.md` in this checkout yet.\n"
    files.append(File.generated(config, "changelog.md", content=text))
    for p in sorted(RESULTS.glob("*.csv")):
        files.append(File.generated(config, f"results/{p.name}", abs_src_path=str(p)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    depth = page.file.src_uri.count("/")

    def sub(m: re.Match) -> str:
        args = _parse_args(m.group(2))
        return _render_results(args, depth) if m.group(1) == "results" else _render_data_size(args, depth)

    return _DIRECTIVE.sub(lambda m: "\n" + sub(m) + "\n", markdown)  # a table needs blank lines around it
