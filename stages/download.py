"""Stage 1: fetch (or generate) the raw photos into data/raw with a manifest."""

from inat_classifier import stage

stage.validate()  # first, as in every stage: a params typo prints one line, nothing else

from inat_classifier.params import Params
from inat_classifier.data.sources import download


def main(params: Params) -> None:
    download(params.download, params.data.max_pixels)


if __name__ == "__main__":
    stage.run(main)
