"""Print image / pixel AUROC / AU-PRO and per-type pixel AUROC / AU-PRO of `dad-edge eval --json` files."""
import json, sys
for p in sys.argv[1:]:
    try:
        d = json.load(open(p))
    except Exception as e:
        print(p, "unreadable:", e); continue
    t = d["per_type"]
    per = " ".join(f"{k[:5]} {v['pixel_auroc']:.3f}/{v['au_pro']:.3f}" for k, v in sorted(t.items()))
    print(f"{p:28s} {d['image_auroc']:.3f} / {d['pixel_auroc']:.3f} / {d['au_pro']:.3f}   {per}")
