"""QAT training for ``qat`` jobs: one code path (:mod:`worker.training.run`) used in the worker's own
process (world_size 1), in each rank of torch's elastic launcher (:mod:`worker.training.launch`
starts ``python -m torch.distributed.run ... -m worker.training.entry``), and in each pod of a
Kubeflow TrainJob (:mod:`worker.training.kubeflow`)."""
