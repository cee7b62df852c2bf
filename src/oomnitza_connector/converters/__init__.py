"""Converters: built-ins, custom ``[converters]`` bodies and the registry that binds them."""

from .builtin import BUILTINS, Converter, LocationIndex, MacModelLookup
from .registry import (
    BoundConverter,
    ConverterRegistry,
    DynamicException,
    cae,
    compile_body,
    parse_converter_spec,
)

__all__ = [
    "BUILTINS",
    "BoundConverter",
    "Converter",
    "ConverterRegistry",
    "DynamicException",
    "LocationIndex",
    "MacModelLookup",
    "cae",
    "compile_body",
    "parse_converter_spec",
]
