"""A real KServe model server for the remote-verification tests: serves one Keras model file over HTTP on
loopback, under two names, with KServe's own ``ModelServer`` (both protocols: the v1 / TensorFlow Serving
``:predict`` API and the Open Inference Protocol ``/v2/models/NAME/infer``).

    python tests/servers/kserve_keras.py MODEL.keras PORT NAME

``NAME`` answers with class probabilities (softmax of the model's outputs), ``NAME-labels`` with class labels.
Inputs arrive in [0, 255] (as a deployed image model would take them) and are divided by 255 here.
"""

import sys

import numpy as np

model_path, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.argv = sys.argv[:1]  # KServe parses the command line at import

import keras  # noqa: E402
import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402


class KerasModel(kserve.Model):
    def __init__(self, model_name: str, net, labels: bool) -> None:
        super().__init__(model_name)
        self.net = net
        self.labels = labels
        self.ready = True

    def _run(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(self.net(np.asarray(x, np.float32) / 255.0, training=False), np.float64)
        if self.labels:
            return np.argmax(z, axis=1).astype(np.int64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            out = self._run(payload.inputs[0].as_numpy())
            dtype = "INT64" if self.labels else "FP32"
            return InferResponse(
                response_id=payload.id or "0",
                model_name=self.name,
                infer_outputs=[
                    InferOutput(name="output-0", shape=list(out.shape), datatype=dtype, data=out.reshape(-1).tolist())
                ],
            )
        return {"predictions": self._run(np.asarray(payload["instances"], np.float32)).tolist()}


if __name__ == "__main__":
    net = keras.saving.load_model(model_path, compile=False)
    models = [KerasModel(name, net, labels=False), KerasModel(f"{name}-labels", net, labels=True)]
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start(models)
