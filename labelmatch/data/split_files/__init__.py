"""The COCO-format split files the datasets read, and their writers (one module each):

folds             COCO-standard folds (STAC / official LabelMatch / MMDetection 3 sampler)
unbiased_teacher  Unbiased Teacher's position lists -> the same json pair
coco_additional   image_info_unlabeled2017.json -> an unlabeled COCO file
voc               VOC XML -> COCO json
custom_split      a split of your own COCO json (--percent or --per-class)
image_folder      a folder of images -> an unlabeled COCO file
sidecar           labeled image ids + checksum beside every labeled file written
files             split file names and atomic json writes

`python -m labelmatch.prepare` is their command line.
"""
