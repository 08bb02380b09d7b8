"""Adapters: anything that maps a float batch to logits, labels or outputs. Keras 2/3 models, model files and
SavedModels, forests (:mod:`.classifier`), TFLite (:mod:`.tflite`), the raw outputs of any task
(:mod:`.outputs`), Keras Applications (:mod:`.imagenet`), prediction APIs (:mod:`.remote`), a query-counting
oracle (:mod:`.oracle`), refusing files that run code (:mod:`.safety`) and tf.distribute shards
(:mod:`.sharding`).
"""
