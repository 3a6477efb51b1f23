"""dad_edge: DiffusionAD anomaly detection, from training to TensorRT on the edge."""
