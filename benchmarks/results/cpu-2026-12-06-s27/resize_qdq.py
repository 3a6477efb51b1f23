import numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto, numpy_helper
def build(mode, ctm, roi_empty=True):
    sc=numpy_helper.from_array(np.array(0.02,np.float32),'s'); zp=numpy_helper.from_array(np.array(0,np.uint8),'z')
    scales=numpy_helper.from_array(np.array([1,1,2,2],np.float32),'scales')
    nodes=[helper.make_node('QuantizeLinear',['x','s','z'],['xq']),
           helper.make_node('DequantizeLinear',['xq','s','z'],['xd']),
           helper.make_node('Resize',['xd','','scales'],['r'],mode=mode,coordinate_transformation_mode=ctm),
           helper.make_node('QuantizeLinear',['r','s','z'],['rq']),
           helper.make_node('DequantizeLinear',['rq','s','z'],['y'])]
    g=helper.make_graph(nodes,'g',[helper.make_tensor_value_info('x',TensorProto.FLOAT,[1,8,16,16])],[helper.make_tensor_value_info('y',TensorProto.FLOAT,[1,8,32,32])],[sc,zp,scales])
    return helper.make_model(g,opset_imports=[helper.make_opsetid('',17)])
for mode,ctm in [('linear','align_corners'),('linear','half_pixel'),('linear','asymmetric'),('nearest','asymmetric')]:
    m=build(mode,ctm); onnx.save(m,'r.onnx')
    o=ort.SessionOptions(); o.graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED; o.optimized_model_filepath='r_opt.onnx'
    ort.InferenceSession('r.onnx',o,providers=['CPUExecutionProvider'])
    print(mode,ctm,[n.op_type for n in onnx.load('r_opt.onnx').graph.node])
