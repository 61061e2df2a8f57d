"""``hf-compress demo``: the main job on an embedded default, with no downloads.

```python
from hf_compress.demo import run_demo

run_demo(output_dir="hf_compress_demo", quick=True)  # about 2 minutes on 2 CPU cores
```
"""

from hf_compress.demo.pipeline import STUDENTS, StudentSpec, run_demo
from hf_compress.demo.settings import FULL, QUICK, DemoSettings

__all__ = ["FULL", "QUICK", "STUDENTS", "DemoSettings", "StudentSpec", "run_demo"]
