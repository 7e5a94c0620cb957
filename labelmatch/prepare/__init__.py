"""`python -m labelmatch.prepare SUBCOMMAND`: the command line over the split-file writers of
`labelmatch.data.split_files` (COCO-standard folds, Unbiased Teacher lists, COCO-additional, VOC,
custom splits of your own json, an image folder as unlabeled data, split checksums). The writers
live with the data, which writes missing split files on first use; this package only parses
arguments and reports, so that `data` never imports `prepare`."""
