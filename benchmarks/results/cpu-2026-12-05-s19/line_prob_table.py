import re, sys
def read(n):
    rows = {}
    for line in open(f"/tmp/s19/runs/{n}.eval"):
        p = line.split()
        if len(p) == 8 and p[0] in ("all","blowhole","break","crack","fray","uneven"):
            rows[p[0]] = [float(x)/100 for x in p[1:]]
    return rows
seeds = [int(s) for s in sys.argv[1:]]
print("| seed | default (Perlin only) | `--line-prob 0.3` | difference | crack image | crack pixel | break image | fray image | uneven pixel |")
print("|---:|---|---|---|---|---|---|---|---|")
diffs = []
for s in seeds:
    b, l = read(f"base30_s{s}"), read(f"line30_s{s}")
    f = lambda r: f"{r['all'][0]:.3f} / {r['all'][1]:.3f} / {r['all'][2]:.3f}"
    d = [l['all'][i]-b['all'][i] for i in range(3)]; diffs.append(d)
    g = lambda k, i: f"{b[k][i]:.3f} -> {l[k][i]:.3f}"
    print(f"| {s} | {f(b)} | {f(l)} | {d[0]:+.3f} / {d[1]:+.3f} / {d[2]:+.3f} | {g('crack',0)} | {g('crack',1)} | {g('break',0)} | {g('fray',0)} | {g('uneven',1)} |")
m = [sum(d[i] for d in diffs)/len(diffs) for i in range(3)]
lo = [min(d[i] for d in diffs) for i in range(3)]; hi = [max(d[i] for d in diffs) for i in range(3)]
print(f"| mean | | | {m[0]:+.3f} / {m[1]:+.3f} / {m[2]:+.3f} | | | | | |")
print("range", [f"{a:+.3f}..{b:+.3f}" for a, b in zip(lo, hi)])
for arm in ("base30", "line30"):
    vals = [read(f"{arm}_s{s}")['all'] for s in seeds]
    print(arm, "mean", " / ".join(f"{sum(v[i] for v in vals)/len(vals):.3f}" for i in range(3)),
          "min-max", " ".join(f"{min(v[i] for v in vals):.3f}-{max(v[i] for v in vals):.3f}" for i in range(3)))
