"""Attack tests: what a hostile or careless client sends, and what Deputy must refuse."""
