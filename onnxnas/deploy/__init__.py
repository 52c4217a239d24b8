"""Deployment: the parts of ``onnxnas finalize`` and the API to run what it ships.

For deployment engineers::

    from onnxnas.deploy import load_model

    with load_model("out/model.onnx") as model:   # or out/model.engine
        logits = model.run(image)
"""

from onnxnas.deploy.runtime import DeployedModel, load_model, open_runner

__all__ = ["DeployedModel", "load_model", "open_runner"]
