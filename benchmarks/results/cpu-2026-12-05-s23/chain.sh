#!/usr/bin/env bash
while kill -0 1254 2>/dev/null; do sleep 10; done
code=/tmp/s23/code; out=/tmp/s23/runs/aimreal_s0
cd $code && PYTHONPATH=$code python -c "import sys; from dad_edge.cli import main; sys.exit(main())" eval $out/model.safetensors --data /work/shared/data/magnetic_tile > $out.eval 2>&1
bash /tmp/s23/pair.sh 1
