"""Safety checks of a ``.pt2`` archive (torch.export.save), before torch.export.load sees it.

Why: torch 2.13's ``torch.export.load`` runs pickle on several members — pickled weights and
constants with ``weights_only=False``, custom/opaque objects with plain ``pickle.loads``, sample
inputs with a silent fallback to ``weights_only=False``, legacy-format archives — and evaluates
symbolic shape expressions with ``sympy.sympify`` (Python ``eval``). The rule enforced here:

* the archive uses the current layout (one root folder, ``archive_format == "pt2"``); no legacy
  members, no AOTInductor / ExecuTorch / MTIA payloads (compiled code), nothing unknown;
* every weight and constant is a raw tensor (``use_pickle: false``, ``tensor_*`` constants only),
  and every raw payload file is referenced by a config;
* sample inputs are empty (a program saved without example inputs) or a ``torch.save`` archive whose pickles import only allow-listed tensor globals
  and which loads with ``weights_only=True`` (so torch's fallback is never reached);
* every ``expr_str`` in the program JSON is a plain arithmetic expression over shape symbols;
  ``guards_code`` (Python source that ``ExportedProgram.module()`` would run with ``exec``) must be a
  list of strings, and is never executed (core.io.pt2 drops it before building the module).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch

from core.errors import ModelLoadError
from core.io.limits import MAX_MODEL_BYTES, check_zip_budget
from core.io.pickle_scan import UnsafePickleError, check_pickle

_FIXED_MEMBERS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_FORBIDDEN_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
_SYMBOL = re.compile(r"^[a-z]+[0-9]+$")
_SYMPY_FUNCTIONS = {
    "Max", "Min", "FloorDiv", "CeilDiv", "Mod", "PythonMod", "CleanDiv", "IntTrueDiv", "FloatTrueDiv",
    "TruncToInt", "TruncToFloat", "RoundToInt", "RoundDecimal", "ToFloat", "Pow", "PowByNatural",
    "FloatPow", "ModularIndexing", "Where", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "True", "False", "floor", "ceiling", "Abs", "sqrt", "OpaqueUnaryFn_sqrt", "Identity", "LShift",
    "RShift", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "oo", "zoo", "nan",
    # sympy.srepr, the form torch writes: Symbol('s0', positive=True, integer=True), Mul(Integer(2), ...)
    "Symbol", "Integer", "Rational", "Float", "Mul", "Add", "Half", "One", "Zero", "NegativeOne",
    "Infinity", "NegativeInfinity", "NaN", "BooleanTrue", "BooleanFalse", "StrictLessThan", "LessThan",
    "StrictGreaterThan", "GreaterThan", "Equality", "Unequality", "positive", "negative", "nonnegative",
    "nonpositive", "integer", "real", "finite", "zero", "even", "odd", "precision",
}  # fmt: skip
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_ +\-*/%(),.<>=!&|~]*$")
_QUOTED_NAME = re.compile(r"'[a-z]+[0-9]+'")
_QUOTED_NUMBER = re.compile(r"'[0-9][0-9.e+\-]*'")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _fail(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(
        f"model file {str(path)!r}: {what}; accepted: a torch.export.save archive of raw tensors "
        "(no pickled objects, no compiled code)"
    )


def check_expression(expr: str) -> bool:
    """True when ``expr`` is arithmetic over shape symbols (s0, u1, ...) and known sympy functions."""
    # Quoted strings may only be symbol names or numbers (srepr's Symbol('s0'), Float('1.5')).
    expr = _QUOTED_NAME.sub("s0", _QUOTED_NUMBER.sub("0", expr))
    if not _EXPR_CHARS.match(expr) or "__" in expr or re.search(r"(?<![0-9])\.|\.(?![0-9])", expr):
        return False
    return all(_SYMBOL.match(name) or name in _SYMPY_FUNCTIONS for name in _IDENT.findall(expr))


def _walk_expressions(node: object, path: Path, member: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str" and not (isinstance(value, str) and check_expression(value)):
                raise _fail(
                    path, f"{member} holds a shape expression that is not plain arithmetic: {value!r}"
                )
            _walk_expressions(value, path, member)
    elif isinstance(node, list):
        for value in node:
            _walk_expressions(value, path, member)


def _read_json(archive: zipfile.ZipFile, name: str, path: Path) -> object:
    try:
        return json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"member {name!r} is not valid JSON ({exc})") from exc
    except RecursionError:
        raise _fail(path, f"member {name!r} nests too deeply") from None


def _check_payload_config(config: object, name: str, path: Path, constants: bool) -> set[str]:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _fail(path, f"member {name!r} is not a payload config")
    files: set[str] = set()
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _fail(path, f"{fqn!r} in {name!r} is stored as a pickle")
        file = meta.get("path_name")
        if not isinstance(file, str) or "/" in file or file.startswith("."):
            raise _fail(path, f"{fqn!r} in {name!r} has an invalid payload name {file!r}")
        if constants and not file.startswith("tensor_"):
            raise _fail(path, f"constant {fqn!r} is a custom or opaque object ({file!r})")
        files.add(file)
    return files


def _check_sample_inputs(data: bytes, name: str, path: Path) -> None:
    # torch.export.save writes this member empty when the program has no example inputs
    # (``example_inputs is None``), and torch.export.load reads an empty member back as None.
    if not data:
        return
    try:
        nested = zipfile.ZipFile(io.BytesIO(data))
        infos = nested.infolist()
        check_zip_budget(path, infos, kind="model", max_bytes=MAX_MODEL_BYTES, error=ModelLoadError)
        pickles = [info.filename for info in infos if info.filename.endswith(".pkl")]
        if not pickles:
            raise _fail(path, f"member {name!r} holds no tensor archive")
        for member in pickles:
            check_pickle(nested.read(member))
    except zipfile.BadZipFile as exc:
        raise _fail(path, f"member {name!r} is not a torch.save archive ({exc})") from exc
    except UnsafePickleError as exc:
        raise _fail(path, f"member {name!r}: {exc}") from exc
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # any failure here would make torch retry with weights_only=False
        raise _fail(path, f"member {name!r} does not load as plain tensors ({type(exc).__name__})") from exc


def check_pt2_archive(path: Path) -> None:
    """Raise ModelLoadError unless ``path`` passes the rule in this module's docstring."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _fail(path, f"not a zip archive (truncated or not a .pt2?): {exc}") from exc
    with archive:
        infos = archive.infolist()
        check_zip_budget(path, infos, kind="model", max_bytes=MAX_MODEL_BYTES, error=ModelLoadError)
        names = [info.filename for info in infos if not info.is_dir()]
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or any("/" not in name for name in names):
            raise _fail(path, "members are not under one root folder (a legacy or foreign archive)")
        root = roots.pop() + "/"
        members = {name[len(root) :]: name for name in names}
        if "archive_format" not in members or archive.read(root + "archive_format").strip() != b"pt2":
            raise _fail(path, "archive_format is missing or not 'pt2'")
        allowed: set[str] = set(_FIXED_MEMBERS)
        models = [m for m in members if m.startswith("models/") and m.endswith(".json")]
        if "models/model.json" not in members:
            raise _fail(path, "no exported program named 'model' (models/model.json)")
        for model_member in models:
            model = model_member[len("models/") : -len(".json")]
            program = _read_json(archive, members[model_member], path)
            # torch 2.13 writes guards on dynamic dimensions as Python source (guards_code), which
            # ExportedProgram.module() would exec(). They are kept as inert strings: core.io.pt2 clears
            # them and never builds the _guards_fn that runs them (the same constraints are in the
            # program's symbolic input shapes and range_constraints, which are data).
            guards = program.get("guards_code", []) if isinstance(program, dict) else []
            if not isinstance(guards, list) or not all(isinstance(g, str) for g in guards):
                raise _fail(path, f"{model_member}: guards_code is not a list of strings")
            try:
                _walk_expressions(program, path, model_member)
            except RecursionError:  # nested near the parser's own limit: no exported program is
                raise _fail(path, f"{model_member} nests too deeply") from None
            allowed.add(model_member)
            for kind, constants in (("weights", False), ("constants", True)):
                config_name = f"data/{kind}/{model}_{kind}_config.json"
                if config_name not in members:
                    raise _fail(path, f"missing {config_name!r} (legacy pickled {kind}?)")
                config = _read_json(archive, members[config_name], path)
                files = _check_payload_config(config, config_name, path, constants)
                allowed.add(config_name)
                allowed.update(f"data/{kind}/{file}" for file in files if f"data/{kind}/{file}" in members)
            sample = f"data/sample_inputs/{model}.pt"
            if sample in members:
                _check_sample_inputs(archive.read(members[sample]), sample, path)
                allowed.add(sample)
        for member in members:
            if member.startswith(_FORBIDDEN_DIRS):
                raise _fail(path, f"member {member!r} holds compiled code, which is not loaded")
            if member not in allowed and not member.startswith("extra/"):
                raise _fail(path, f"unexpected member {member!r}")
