"""Report only: the three-stage seed-1 model's map at other sets of strides, same weights (test split, nothing selected)."""
import json, sys
import torch
from dad_edge.runtime.detector import Detector
from dad_edge.model.segnet import SegNet
from dad_edge.training.evaluate import evaluate

path = sys.argv[1]
for strides in [(1, 2, 4), (1, 2), (1,), (2,), (4,)]:
    with Detector(path, backend="torch", device="cpu") as det:
        nets = []
        def walk(o, depth=0, seen=set()):
            if id(o) in seen or depth > 4: return
            seen.add(id(o))
            if isinstance(o, SegNet): nets.append(o); return
            if isinstance(o, torch.nn.Module):
                for m in o.modules():
                    if isinstance(m, SegNet): nets.append(m)
                return
            for v in getattr(o, "__dict__", {}).values(): walk(v, depth + 1)
        walk(det)
        for n in set(nets): n.map_strides = strides if len(strides) > 1 else (); n.stride = strides[0] if len(strides) == 1 else 1
        m = evaluate(det, "/work/shared/data/magnetic_tile")
        t = m["per_type"]
        print(strides, len(set(nets)), "%.3f %.3f %.3f" % (m["image_auroc"], m["pixel_auroc"], m["au_pro"]),
              "uneven px %.3f crack pro %.3f" % (t["uneven"]["pixel_auroc"], t["crack"]["au_pro"]), flush=True)
