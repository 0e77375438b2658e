"""Source type → Arrow type + fidelity (exact / text / refused). One decision, used by `check` and by every read."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

NATIVE_TYPE_KEY = b"rivet.native_type"


@dataclass(frozen=True)
class ColumnMapping:
    name: str
    native_type: str          # as declared by the source
    arrow_type: pa.DataType   # type written to the output
    fidelity: str             # "exact" | "text" | "refused"
    select_expr: str          # dialect SQL for this column in the server-side SELECT list (quoted column or a cast)
    note: str = ""            # why text / refused, naming the [exports.columns] override

    @property
    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type, metadata={NATIVE_TYPE_KEY: self.native_type.encode()})


def output_schema(mappings: list[ColumnMapping]) -> pa.Schema:
    return pa.schema([m.field for m in mappings if m.fidelity != "refused"])
