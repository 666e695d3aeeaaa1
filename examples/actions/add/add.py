import json
import sys

inputs = json.loads(sys.argv[-1])
print(f"::sum::{inputs['a'] + inputs['b']}")
