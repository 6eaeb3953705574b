"""Static check of pickle byte streams: which globals would unpickling import?

Unpickling runs code by importing globals and calling them. This scan walks the opcode stream
without executing anything and refuses every global outside a small allow-list of tensor
rebuilders, storages, dtypes and ``collections.OrderedDict`` — enough for ``torch.save`` of
tensors and tuples/dicts of tensors, nothing that can reach ``os``/``eval``/``builtins``.
"""

from __future__ import annotations

import pickletools

_TORCH_STORAGES = {
    f"{name}Storage"
    for name in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "Untyped",
    )
}  # fmt: skip
_TORCH_DTYPES = {
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "complex64", "complex128", "float", "double", "half", "long", "int", "short",
}  # fmt: skip
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch", "device"),
    }
    | {("torch", name) for name in _TORCH_STORAGES | _TORCH_DTYPES}
)

# Opcodes that import through the copyreg extension registry: never produced by torch.save.
_EXTENSION_OPS = {"EXT1", "EXT2", "EXT4"}
_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


class UnsafePickleError(ValueError):
    """The stream imports a global outside ALLOWED_GLOBALS (or cannot be parsed)."""


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every ``(module, name)`` the stream would import, in order; raises UnsafePickleError if unparsable.

    ``STACK_GLOBAL`` takes its module and name from the two values pushed before it; they are
    tracked through the memo. A ``STACK_GLOBAL`` whose operands are not plain strings is unsafe.
    """
    found: list[tuple[str, str]] = []
    memo: dict[int, object] = {}
    pushed: list[object] = []  # recent values pushed, strings or None for anything else
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name in _EXTENSION_OPS:
                raise UnsafePickleError(f"pickle uses the extension registry ({name})")
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                if len(pushed) < 2 or not all(isinstance(v, str) for v in pushed[-2:]):
                    raise UnsafePickleError("pickle STACK_GLOBAL with operands that are not plain strings")
                found.append((str(pushed[-2]), str(pushed[-1])))
                pushed.append(None)
            elif name in _STRING_OPS:
                pushed.append(arg if isinstance(arg, str) else None)
            elif name in _MEMO_GET_OPS:
                pushed.append(memo.get(int(arg)))  # type: ignore[arg-type]
            elif name in _MEMO_PUT_OPS:
                memo[int(arg)] = pushed[-1] if pushed else None  # type: ignore[arg-type]
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            else:
                pushed.append(None)
    except UnsafePickleError:
        raise
    except Exception as exc:  # pickletools raises ValueError and others on malformed streams
        raise UnsafePickleError(f"unreadable pickle stream ({exc})") from exc
    return found


def check_pickle(data: bytes) -> None:
    """Raise UnsafePickleError unless every global the stream imports is in ALLOWED_GLOBALS."""
    for module, attr in pickle_globals(data):
        if (module, attr) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"pickle imports {module}.{attr}, which is not an allowed tensor global")
