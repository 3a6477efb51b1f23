"""Where do the maps peak on good vs defective test images? (diagnostic, not kept)"""
import sys, numpy as np
from dad_edge.runtime.detector import Detector
from dad_edge.data.layouts import open_category
from dad_edge.training.evaluate import predict_test_set
from dad_edge.training.metrics import compute_metrics
from sklearn.metrics import roc_auc_score
model = sys.argv[1]
cat = open_category("/work/shared/data/magnetic_tile")
samples = cat.test_samples()
with Detector(model, batch_size=16) as det:
    p = predict_test_set(det, samples)
np.savez_compressed(sys.argv[2], maps=p.maps, scores=p.scores, masks=p.masks, labels=p.labels,
                    types=np.array(p.defect_types))
