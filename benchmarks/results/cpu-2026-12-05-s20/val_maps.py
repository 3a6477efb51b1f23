import sys, numpy as np
from dad_edge.runtime.detector import Detector
from dad_edge.data.layouts import open_category
from dad_edge.training.evaluate import predict_test_set
model, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cat = open_category("/work/shared/data/magnetic_tile")
_, val = cat.train_val_split(0.1, seed)
with Detector(model, batch_size=16) as det:
    p = predict_test_set(det, val)
np.savez_compressed(out, maps=p.maps, scores=p.scores)
print(len(val))
