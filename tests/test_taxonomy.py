"""Taxonomy kept with the classes: class-names files old and new, sources' taxa, rank scores, rollup."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from inat_classifier.data.classnames import read_class_names, read_classes, write_class_names
from inat_classifier.errors import DataError
from inat_classifier.data.manifest import COLUMNS, write_manifest
from inat_classifier.params import parse_params
from inat_classifier.data.sources import sample
from inat_classifier.data.taxonomy import Taxon, from_api, from_category, from_manifest, make, rank_accuracies, rollup

THRUSHES = {"kingdom": "Animalia", "class": "Aves", "order": "Passeriformes", "family": "Turdidae",
            "genus": "Catharus"}
SWAINSON = make("Catharus ustulatus", 12011, "species", "Swainson's Thrush", THRUSHES)
HERMIT = make("Catharus guttatus", 12015, "species", "Hermit Thrush", THRUSHES)
ROBIN = make("Turdus migratorius", 12727, "species", "American Robin", {**THRUSHES, "genus": "Turdus"})
RACCOON = make("Procyon lotor", 41663, "species", "Common Raccoon",
               {"kingdom": "Animalia", "class": "Mammalia", "order": "Carnivora", "family": "Procyonidae",
                "genus": "Procyon"})
CLASSES = [SWAINSON, HERMIT, ROBIN, RACCOON]


# --- class-names files ----------------------------------------------------------------------


def test_classes_json_keeps_id_rank_common_name_and_ancestry(tmp_path):
    path = write_class_names(tmp_path / "classes.json", CLASSES)
    assert read_classes(path) == CLASSES
    assert read_class_names(path) == [taxon.name for taxon in CLASSES]
    first = json.loads(path.read_text())[0]
    assert first == {"name": "Catharus ustulatus", "taxon_id": 12011, "rank": "species",
                     "common_name": "Swainson's Thrush", "ancestry": THRUSHES}
    assert list(first["ancestry"]) == list(THRUSHES)  # root first


def test_old_plain_name_files_still_read_and_names_alone_are_written_as_before(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps(["Catharus guttatus", "Procyon lotor"], indent=2) + "\n")
    assert read_classes(old) == [Taxon("Catharus guttatus"), Taxon("Procyon lotor")]
    assert read_class_names(old) == ["Catharus guttatus", "Procyon lotor"]
    # nothing known beyond the names (the folder source): the same bytes as before taxonomy
    again = write_class_names(tmp_path / "again.json", [Taxon("Catharus guttatus"), "Procyon lotor"])
    assert again.read_bytes() == old.read_bytes()


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "a"}, {"name": "a", "rank": "species"}], "class names are not distinct"),
        ([{"rank": "species"}], "expected class names \\(strings\\) or objects with a 'name'"),
        ([{"name": "a", "taxon_id": "twelve"}], "class 'a': taxon_id 'twelve' is not a positive integer"),
        ([{"name": "a", "ancestry": ["genus", "x"]}], "class 'a': ancestry must map ranks to names"),
        ({"name": "a"}, "expected a non-empty JSON list"),
    ],
)
def test_bad_entries_give_one_line_naming_the_file(tmp_path, entries, message):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=message) as caught:
        read_classes(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_the_manifest_carries_the_taxon_to_the_subset(tmp_path):
    rows = [{"path": f"{t.name}.jpg", "split": "train", "class": t.name, **t.manifest_fields()} for t in CLASSES]
    rows.append({"path": "x.jpg", "split": "test", "class": "Nomen nudum"})  # a source without taxonomy
    frame = write_manifest(tmp_path, rows, [])
    assert list(frame.columns) == COLUMNS
    read = pd.read_csv(tmp_path / "manifest.csv", dtype=str, keep_default_na=False)
    assert from_manifest(read, ["Procyon lotor", "Nomen nudum"]) == [RACCOON, Taxon("Nomen nudum")]
    older = read.drop(columns=["taxon_id", "rank", "common_name", "ancestry"])  # written before taxonomy
    assert from_manifest(older, ["Procyon lotor"]) == [Taxon("Procyon lotor")]


# --- sources --------------------------------------------------------------------------------


def test_api_taxa_give_ancestry_from_their_ancestors():
    api = {"id": 12011, "name": "Catharus ustulatus", "rank": "species", "preferred_common_name": "Swainson's Thrush",
           "ancestor_ids": [48460, 1, 3, 12010, 12011],
           "ancestors": [{"id": 1, "name": "Animalia", "rank": "kingdom"}, {"id": 3, "name": "Aves", "rank": "class"},
                         {"id": 12010, "name": "Catharus", "rank": "genus"}]}
    taxon = from_api(api)
    assert taxon == make("Catharus ustulatus", 12011, "species", "Swainson's Thrush",
                         {"kingdom": "Animalia", "class": "Aves", "genus": "Catharus"})
    assert taxon.url == "https://www.inaturalist.org/taxa/12011"


def test_competition_categories_2018_fields_and_2017_names():
    c2018 = {"id": 7, "name": "Catharus ustulatus", "supercategory": "Aves", "kingdom": "Animalia",
             "phylum": "Chordata", "class": "Aves", "order": "Passeriformes", "family": "Turdidae",
             "genus": "Catharus"}
    taxon = from_category(c2018, "Catharus ustulatus")
    assert taxon.at("family") == "Turdidae" and taxon.at("genus") == "Catharus" and taxon.rank == "species"
    assert taxon.taxon_id is None and taxon.url is None  # category ids are the competition's own
    c2017 = {"id": 8, "name": "Procyon lotor", "supercategory": "Mammalia"}
    assert from_category(c2017, "Procyon lotor").ancestry == (("genus", "Procyon"),)  # the binomial's first word
    c2021 = {"id": 9, "name": "Procyon lotor", "common_name": "Common Raccoon", "family": "Procyonidae"}
    assert from_category(c2021, "Procyon lotor").common_name == "Common Raccoon"


def test_the_sample_has_a_made_up_taxonomy_in_its_manifest(tmp_path):
    config = parse_params({"download": {"sample": {"classes": 3, "train_images": 4, "test_images": 3}}}).download.sample
    rows = sample.generate(config, tmp_path)
    taxa = from_manifest(pd.DataFrame(rows).astype(str), ["Sample striata", "Sample maculata"])
    assert [t.at("genus") for t in taxa] == ["Sample", "Sample"]
    assert [t.at("subgenus") for t in taxa] == ["Lineosample", "Punctosample"]
    assert taxa[0].common_name == "Striped Sample" and taxa[0].taxon_id is None


# --- scores and rollup ----------------------------------------------------------------------


def test_genus_and_family_accuracy_on_a_hand_made_example():
    # true:       Swainson, Swainson, Hermit,  Robin,   Raccoon, Raccoon
    # predicted:  Swainson, Hermit,   Robin,   Hermit,  Raccoon, Robin
    labels = np.array([0, 0, 1, 2, 3, 3])
    probs = np.eye(4)[[0, 1, 2, 1, 3, 2]] * 0.7 + 0.075
    scores = rank_accuracies(labels, probs, CLASSES)
    # genus right: 0 (same), 1 (both Catharus), 4 -> 3 of 6; family right: also 2 and 3 (Turdidae) -> 5 of 6
    assert scores == {"genus_accuracy": 0.5, "family_accuracy": round(5 / 6, 6)}


def test_rank_scores_only_where_every_class_has_the_rank():
    partly = [SWAINSON, HERMIT, Taxon("Procyon lotor")]
    probs = np.eye(3)
    assert rank_accuracies(np.arange(3), probs, partly) == {}
    no_family = [make(t.name, None, "species", "", {"genus": t.at("genus")}) for t in CLASSES]
    assert set(rank_accuracies(np.arange(4), np.eye(4), no_family)) == {"genus_accuracy"}


def test_rollup_answers_the_lowest_rank_that_reaches_the_threshold():
    probs = np.array([
        [0.95, 0.02, 0.02, 0.01],  # sure of the species
        [0.50, 0.43, 0.05, 0.02],  # a Catharus, not sure which: genus 0.93
        [0.40, 0.10, 0.45, 0.05],  # Turdidae: family 0.95, no genus reaches 0.9
        [0.30, 0.20, 0.10, 0.40],  # nothing reaches 0.9 below the class (kingdom Animalia: 1.0)
    ])
    answers, ranks, chances = rollup(probs, CLASSES, 0.9)
    assert answers == ["Catharus ustulatus", "Catharus", "Turdidae", "Animalia"]
    assert ranks == ["species", "genus", "family", "kingdom"]
    np.testing.assert_allclose(chances, [0.95, 0.93, 0.95, 1.0])
    birds_only = [make(t.name, t.taxon_id, t.rank, "", {"genus": t.at("genus")}) for t in CLASSES]
    answers, ranks, chances = rollup(probs, birds_only, 0.9)
    assert answers[3] is None and ranks[3] == "" and chances[3] == 0.4  # unknown, with the top class's probability


def test_a_class_without_the_rank_counts_towards_no_taxon_of_it():
    taxa = [SWAINSON, HERMIT, Taxon("Catharus minimus")]  # the third's genus is not recorded
    answers, _, chances = rollup(np.array([[0.45, 0.2, 0.35]]), taxa, 0.9)
    assert answers == [None] and chances[0] == 0.45  # Catharus is 0.65 as far as anyone knows
