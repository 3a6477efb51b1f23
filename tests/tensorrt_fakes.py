"""Fakes of the TensorRT and cuda-python calls the TensorRT path makes, for machines without either.

The fake "engine" runs the exported ONNX graph with ONNX Runtime, reading and writing the
(host-backed) "device" buffers at the addresses the backend set, so the buffer sizing, copies,
shapes and batching are real. Stream capture is modelled as CUDA does it: between
cudaStreamBeginCapture and cudaStreamEndCapture, copies, kernel launches (FakeCudart.submit) and
engine enqueues are recorded with their arguments as they were then, not run; a launched graph
replays them. Copies inside a capture must use pinned host memory, as in CUDA.
"""
import ctypes
import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort

class FakeCudart:
    """cuda.bindings.runtime: every call returns (error, *values); memory is host memory."""

    class cudaError_t:
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaDeviceAttr:
        cudaDevAttrComputeCapabilityMajor = "major"
        cudaDevAttrComputeCapabilityMinor = "minor"

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    CAPTURE_INVALIDATED = 901  # cudaErrorStreamCaptureInvalidated

    def __init__(self, cc=(8, 7), limit=1 << 30):
        self.cc, self.limit = cc, limit
        self.memory = {}  # ptr -> the numpy array behind it
        self.pinned = {}  # ptr -> page-locked host memory (cudaMallocHost)
        self.mallocs = 0
        self.capturing = None  # the work recorded since cudaStreamBeginCapture, else None
        self.invalidate_capture = False  # make the next capture fail, as an uncapturable enqueue does
        self.graphs, self.execs = {}, {}  # captured graphs and their executable forms: handle -> recorded work
        self.graph_launches = 0
        self._handles = itertools.count(1000)

    def submit(self, work):
        """Stream work: run now, or recorded while the stream is being captured."""
        if self.capturing is None:
            work()
        else:
            self.capturing.append(work)

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaSetDevice(self, index):
        return (0,)

    def cudaDeviceGetAttribute(self, attr, index):
        return 0, self.cc[0] if attr == "major" else self.cc[1]

    def cudaGetDeviceProperties(self, index):
        return 0, SimpleNamespace(name=b"Fake GPU\x00\x00")

    def cudaStreamCreate(self):
        return 0, 77

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaStreamSynchronize(self, stream):
        assert self.capturing is None, "synchronize inside a capture is illegal"
        return (0,)

    def cudaMalloc(self, nbytes):
        if nbytes > self.limit:
            return self.cudaError_t.cudaErrorMemoryAllocation, 0
        buf = np.zeros(nbytes, np.uint8)
        self.memory[buf.ctypes.data] = buf
        self.mallocs += 1
        return 0, buf.ctypes.data

    def cudaFree(self, ptr):
        del self.memory[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        to_device = kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice
        device, host = (dst, src) if to_device else (src, dst)
        assert self.memory[device].nbytes >= nbytes, "copy past the end of a device buffer"
        if self.capturing is not None:
            assert host in self.pinned, "a captured copy must use pinned host memory"
        self.submit(lambda: ctypes.memmove(dst, src, nbytes))
        return (0,)

    def cudaMallocHost(self, nbytes):
        buf = np.zeros(nbytes, np.uint8)
        self.pinned[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cudaFreeHost(self, ptr):
        del self.pinned[ptr]
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        assert self.capturing is None, "the stream is being captured already"
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        work, self.capturing = self.capturing, None
        if self.invalidate_capture:
            self.invalidate_capture = False
            return self.CAPTURE_INVALIDATED, None
        handle = next(self._handles)
        self.graphs[handle] = work
        return 0, handle

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        handle = next(self._handles)
        self.execs[handle] = list(self.graphs[graph])
        return 0, handle

    def cudaGraphDestroy(self, graph):
        del self.graphs[graph]
        return (0,)

    def cudaGraphLaunch(self, graph_exec, stream):
        for work in self.execs[graph_exec]:
            work()
        self.graph_launches += 1
        return (0,)

    def cudaGraphExecDestroy(self, graph_exec):
        del self.execs[graph_exec]
        return (0,)

    def cudaGetErrorString(self, err):
        return 0, b"out of memory"

    def read(self, ptr, shape):
        out = np.empty(shape, np.float32)
        assert self.memory[ptr].nbytes >= out.nbytes, "device buffer too small for the tensor"
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    def write(self, ptr, array):
        assert self.memory[ptr].nbytes >= array.nbytes, "device buffer too small for the tensor"
        ctypes.memmove(ptr, np.ascontiguousarray(array).ctypes.data, array.nbytes)


class FakeTensorRT:
    """The tensorrt module: builder and runtime; the serialized "engine" is the ONNX file."""

    IO = ("image", "anomaly_map", "score")

    def __init__(self, cudart: FakeCudart, version: str = "10.3.0.26"):
        self.__version__ = version
        self.cudart = cudart
        self.built = []  # the config of every build
        self.network_flags = []  # the creation flags of every network
        trt = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        class Runtime:
            def __init__(self, logger):
                self.DLA_core = None

            def deserialize_cuda_engine(self, plan):
                return FakeEngine(trt, plan) if plan[:1] == b"\x08" else None  # ONNX protobufs start so

        self.Logger, self.Runtime, self.IInt8EntropyCalibrator2 = Logger, Runtime, IInt8EntropyCalibrator2
        self.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
        self.DataType = SimpleNamespace(FLOAT="float")
        self.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=3)
        self.OnnxParserFlag = SimpleNamespace(NATIVE_INSTANCENORM="native_instancenorm")
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = SimpleNamespace(FP16="fp16", INT8="int8", TF32="tf32", GPU_FALLBACK="gpu_fallback")
        self.DeviceType = SimpleNamespace(DLA="dla", GPU="gpu")

    @staticmethod
    def nptype(dtype):
        return np.float32

    def Builder(self, logger):
        return FakeBuilder(self)

    def OnnxParser(self, network, logger):
        return FakeParser(network)


class FakeParser:
    num_errors = 0

    def __init__(self, network):
        self.network, self.flags = network, set()

    def set_flag(self, flag):
        self.flags.add(flag)

    def parse_from_file(self, path):
        assert "native_instancenorm" in self.flags, "the flag must be set before parsing"
        self.network.onnx = Path(path).read_bytes()
        return True


class FakeConfig:
    def __init__(self):
        self.flags = {"tf32"}  # TensorRT's default
        self.int8_calibrator = None
        self.profiles, self.calibration_profile = [], None
        self.default_device_type, self.DLA_core, self.cache = "gpu", -1, None

    def set_memory_pool_limit(self, pool, nbytes):
        self.workspace = nbytes

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def set_calibration_profile(self, profile):
        self.calibration_profile = profile

    def create_timing_cache(self, data):
        return SimpleNamespace(serialize=lambda: memoryview(bytes(data) + b"+tuned"))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self):
        return self.cache


class FakeBuilder:
    def __init__(self, trt):
        self.trt = trt

    def create_network(self, flags):
        self.trt.network_flags.append(flags)
        return SimpleNamespace(flags=flags, onnx=None)

    def create_builder_config(self):
        return FakeConfig()

    def create_optimization_profile(self):
        profile = SimpleNamespace(shapes={})
        profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
        return profile

    def build_serialized_network(self, network, config):
        cal = config.int8_calibrator
        if cal is not None:  # what TensorRT does with a calibrator: pull batches until None
            _, opt, _ = config.calibration_profile.shapes["image"]
            assert cal.get_batch_size() == opt[0]
            config.fed = []
            while (ptrs := cal.get_batch(["image"])) is not None:
                config.fed.append(self.trt.cudart.read(ptrs[0], opt))
            cal.write_calibration_cache(b"ranges")
        self.trt.built.append(config)
        # Embed the profile so that the fake engine reports it, as a real one would.
        FakeEngine.profiles[network.onnx] = config.profiles[0].shapes["image"]
        return memoryview(network.onnx)


class FakeEngine:
    profiles = {}  # serialized engine -> the (min, opt, max) input shapes it was built with

    def __init__(self, trt, plan):
        self.trt, self.plan = trt, bytes(plan)
        self.session = ort.InferenceSession(self.plan)
        self.sample = tuple(self.session.get_inputs()[0].shape[1:])
        self.num_io_tensors = 3

    def get_tensor_name(self, i):
        return FakeTensorRT.IO[i]

    def get_tensor_mode(self, name):
        return "input" if name == "image" else "output"

    def get_tensor_dtype(self, name):
        return "float"

    def get_tensor_shape(self, name):
        return {"image": (-1, *self.sample), "anomaly_map": (-1, 1, *self.sample[1:]), "score": (-1,)}[name]

    def get_tensor_profile_shape(self, name, index):
        return self.profiles[self.plan]

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine):
        self.engine, self.addresses, self.batch = engine, {}, None
        self.enqueues = 0

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        assert lo[0] <= shape[0] <= hi[0], "shape outside the optimisation profile"
        self.batch = shape[0]
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def get_tensor_shape(self, name):
        return (self.batch, *self.engine.get_tensor_shape(name)[1:])

    def execute_async_v3(self, stream):
        cudart = self.engine.trt.cudart
        # What the engine's kernels would hold: the shape and addresses of now, not of when they run.
        shape, addresses = self.get_tensor_shape("image"), dict(self.addresses)
        self.enqueues += 1

        def run():
            image = cudart.read(addresses["image"], shape)
            amap, score = self.engine.session.run(["anomaly_map", "score"], {"image": image})
            cudart.write(addresses["anomaly_map"], amap)
            cudart.write(addresses["score"], score)

        cudart.submit(run)
        return True




def install_fake_gpu(monkeypatch) -> FakeTensorRT:
    """The fakes in place of cuda-python's runtime and TensorRT for one test; -> the fake tensorrt module."""
    from dad_edge.runtime.backends import cuda_runtime, tensorrt_backend

    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    monkeypatch.setattr(cuda_runtime, "_import_runtime", lambda: cudart)
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: trt)
    return trt
