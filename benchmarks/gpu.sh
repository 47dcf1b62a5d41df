#!/usr/bin/env bash
# The engine benchmark, the roofline and the paper's protocol on a CUDA GPU, with
# a JSON record of what ran: benchmarks/results/gpu/record.json, beside each
# script's output (bench_engine.txt, roofline.txt, paper_protocol.txt).
#
#     bash benchmarks/gpu.sh            # from the repository root, in the venv
#
# Where torch sees no GPU it says so and exits 0: a CPU-only machine skips it.
# (compare_reference.py runs on the CPU only and is not part of it.)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu.sh: torch.cuda.is_available() is False; skipping the GPU benchmarks."
    exit 0
fi

OUT=benchmarks/results/gpu
mkdir -p "$OUT"
declare -A SECONDS_OF STATUS_OF
run() {  # run NAME COMMAND...: its output to $OUT/NAME.txt, its time and exit status kept
    local name=$1
    shift
    local start=$SECONDS
    echo "== $name: $*"
    set +e
    "$@" 2>&1 | tee "$OUT/$name.txt"
    STATUS_OF[$name]=${PIPESTATUS[0]}
    set -e
    SECONDS_OF[$name]=$((SECONDS - start))
}

run bench_engine "$PYTHON" benchmarks/bench_engine.py --device cuda
run roofline "$PYTHON" benchmarks/roofline.py --device cuda --output "$OUT/roofline_table.txt"
run paper_protocol "$PYTHON" benchmarks/paper_protocol.py --device cuda

"$PYTHON" - "$OUT" \
    "bench_engine=${STATUS_OF[bench_engine]}:${SECONDS_OF[bench_engine]}" \
    "roofline=${STATUS_OF[roofline]}:${SECONDS_OF[roofline]}" \
    "paper_protocol=${STATUS_OF[paper_protocol]}:${SECONDS_OF[paper_protocol]}" <<'EOF'
import json, os, subprocess, sys, time
from pathlib import Path

import torch

out = Path(sys.argv[1])
runs = {}
for item in sys.argv[2:]:
    name, rest = item.split("=")
    status, seconds = rest.split(":")
    runs[name] = {
        "exit_status": int(status), "wall_seconds": int(seconds),
        "output": (out / f"{name}.txt").read_text(),
    }
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
record = {
    "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    "commit": commit.strip(),
    "gpu": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "load_average": os.getloadavg(),
    "runs": runs,
}
(out / "record.json").write_text(json.dumps(record, indent=1) + "\n")
print(f"wrote {out / 'record.json'}")
EOF
