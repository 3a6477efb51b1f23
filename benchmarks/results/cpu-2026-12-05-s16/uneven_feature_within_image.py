import numpy as np, cv2, glob
from dad_edge.training.metrics import roc_auc
ps = sorted(glob.glob('/work/shared/data/magnetic_tile/test/uneven/*'))
for S in (128, 256):
  res = {}
  for p in ps:
    im = cv2.imread(p, 0).astype(np.float32) / 255
    m = cv2.imread(p.replace('test', 'ground_truth').replace('.jpg', '_mask.png'), 0)
    im = cv2.resize(im, (S, S), interpolation=cv2.INTER_AREA); m = cv2.resize(m, (S, S), interpolation=cv2.INTER_NEAREST) > 127
    if not (0 < m.mean() < 1): continue
    b = lambda a, s: cv2.GaussianBlur(a, (0, 0), s * S / 128)
    gx = cv2.Sobel(im, cv2.CV_32F, 1, 0); gy = cv2.Sobel(im, cv2.CV_32F, 0, 1)
    hp = im - b(im, 1)
    F = {'mean': b(im, 4), 'gx2': np.log(b(gx * gx, 4) + 1e-6), 'gy2': np.log(b(gy * gy, 4) + 1e-6),
         'hp2': np.log(b(hp * hp, 4) + 1e-6), 'gx2/gy2': np.log(b(gx * gx, 4) + 1e-6) - np.log(b(gy * gy, 4) + 1e-6),
         'gx2-mean-norm': np.log(b(gx * gx, 4) + 1e-6) - 2 * np.log(b(im, 4) + 1e-3)}
    for k, f in F.items():
        res.setdefault(k, []).append(roc_auc(m.reshape(-1).astype(int), f.reshape(-1)))
  print(S, {k: (round(float(np.mean(v)), 3), round(float(np.mean(np.maximum(v, 1 - np.array(v)))), 3)) for k, v in res.items()})
