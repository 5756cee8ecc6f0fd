"""Models at rest and at work: checkpoint files, prediction, scoring and export.

* ``checkpoint`` -- the checkpoint files (MXNet's layout, written atomically, with the
  preprocessing record), read and written by every tool here and by the trainer.
* ``predict`` -- load a checkpoint, bind its inference graph, preprocess images.
* ``tta`` -- test-time augmentation views.
* ``score`` -- the ``mxcnn-score`` CLI: top-k accuracy on a ``.rec``, ``--predict`` on images.
* ``export_onnx`` -- the ``mxcnn-export-onnx`` CLI, checked against ONNX Runtime.
* ``quantize`` -- the ``mxcnn-quantize`` CLI: MXNet's calibrated oneDNN int8 flow, checkpoint in,
  ``PREFIX-int8`` checkpoint out.
* ``convert`` -- pretrained weights in and out (PyTorch, GluonCV, MXNet examples), over
  ``torch_file``/``torch_pickle`` (state_dict files without torch, read safely),
  ``weight_maps``/``name_rules`` (the mapping tables), ``weight_transforms``,
  ``weight_graph`` and ``weight_check`` (``--check``; ``torch_reference`` is its PyTorch side).

The trainer (``mxcnn.train``) uses this package; nothing here imports the trainer.
"""
