"""Dataset preparation for the paper's benchmarks: `python -m labelmatch.prepare SUBCOMMAND`.

folds             COCO-standard folds (STAC / official LabelMatch / MMDetection 3 sampler)
unbiased_teacher  Unbiased Teacher's position lists -> the same json pair
coco_additional   image_info_unlabeled2017.json -> an unlabeled COCO file
voc               VOC XML -> COCO json
sidecar           labeled image ids + checksum beside every labeled file written
"""
