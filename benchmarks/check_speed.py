"""How long checking every file of the rule library takes (parser construction included).

python benchmarks/check_speed.py      ->  {"files": 31, "seconds": 0.4}
"""

from __future__ import annotations

import json
import time

t0 = time.perf_counter()
from rulelang.lang import library  # noqa: E402
from rulelang.lang.loader import check_path  # noqa: E402

files = library.rule_files()
bad = sum(check_path(p)[0] is None for p in files)
print(json.dumps({"files": len(files), "failed": bad, "seconds": round(time.perf_counter() - t0, 4)}))
