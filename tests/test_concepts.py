"""The concept vocabulary (polycap.data.concepts): the table is complete, its grammar is filled in,
and concept mentions are found as whole words in all five languages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from polycap.data.concepts import (
    LANGUAGES,
    TABLE_PATH,
    ConceptTableError,
    concept_of_class,
    load_concepts,
    mentions,
    names_subject,
    parse_table,
    tokens,
)

REPO = Path(__file__).resolve().parents[1]
SIMPLE_LABELS = REPO.parent / "shared" / "data" / "ood-dev" / "imagenet-simple-labels.json"
CS_CASES = ("nom", "gen", "dat", "acc", "loc", "ins", "nom_pl", "gen_pl", "dat_pl", "acc_pl", "loc_pl", "ins_pl")


@pytest.fixture(scope="module")
def table():
    return load_concepts()


# ---- the table --------------------------------------------------------------------------------------
def test_every_imagenet_class_has_one_concept_in_standard_order(table):
    assert len(table.classes) == 1000
    assert [c.index for c in table.classes] == list(range(1000))
    wnids = [
        line.split("\t")[0]
        for line in (REPO / "src/polycap/backends/encoders/imagenet_labels.txt").read_text().splitlines()
    ]
    assert [c.wnid for c in table.classes] == wnids
    members = sorted(i for c in table for i in c.classes)
    assert members == list(range(1000))  # each class in exactly one concept


def test_labels_are_the_simple_labels():
    if not SIMPLE_LABELS.is_file():
        pytest.skip(f"{SIMPLE_LABELS} not found")
    labels = json.loads(SIMPLE_LABELS.read_text())
    assert [c.label for c in load_concepts().classes] == labels


def test_a_few_hundred_basic_level_concepts_each_with_classes(table):
    assert 300 <= len(table) <= 600
    assert all(c.classes for c in table), [c.id for c in table if not c.classes]
    sizes = sorted((len(c.classes) for c in table), reverse=True)
    assert sizes[0] == len(table["dog"].classes) >= 118
    assert all(c.parent is None or c.parent in table.concepts for c in table)


@pytest.mark.parametrize("indices, concept", [
    (range(281, 286), "cat"), (range(151, 269), "dog"), ([779, 654, 874], "bus"), ([967], "coffee"),
    ([504, 968], "cup"), ([444, 671, 870, 880], "bicycle"), ([2, 3, 4], "shark"), ([817, 751, 468], "car"),
    ([963], "pizza"), ([402, 546], "guitar"), ([805, 852, 430], "ball"), ([339], "horse"),
])  # fmt: skip
def test_spot_checks(indices, concept):
    for i in indices:
        assert concept_of_class(i).id == concept, (i, concept_of_class(i).id)


def test_every_language_has_the_grammar_a_caption_needs(table):
    articles = {
        "en": {"a", "an", None},
        "de": {"ein", "eine", None},
        "fr": {"un", "une", "des", "du", "de la", "de l'"},
    }
    genders = {"de": {"m", "f", "n"}, "fr": {"m", "f"}, "ar": {"m", "f"}, "cs": {"m", "f", "n"}}
    for c in table:
        for lang in LANGUAGES:
            n = c.names[lang]
            assert n.sg and n.pl and n.words, (c.id, lang)
            assert n.words == tuple(w for w in n.words if w == w.lower()), (c.id, lang, "words are lower case")
            if lang in genders and not (lang == "de" and n.plural_only):
                assert n.gender in genders[lang], (c.id, lang, n.gender)
            if lang in articles:
                assert n.article in articles[lang], (c.id, lang, n.article)
        de, fr = c.names["de"], c.names["fr"]
        if de.article:
            assert de.article == {"m": "ein", "f": "eine", "n": "ein"}[de.gender], c.id
        if fr.article in ("un", "une"):
            assert fr.article == {"m": "un", "f": "une"}[fr.gender], c.id
        assert set(c.names["cs"].cases) == set(CS_CASES), c.id
        assert c.names["ar"].match, c.id
        assert c.names["de"].sg[0].isupper(), c.id  # German display form: a capitalised noun


def test_czech_case_forms(table):
    cs = {cid: table[cid].names["cs"] for cid in ("dog", "cat", "bicycle", "horse", "ball", "beach")}
    assert (cs["dog"].sg, cs["dog"].pl, cs["dog"].gender, cs["dog"].animate) == ("pes", "psi", "m", True)
    assert [cs["dog"].cases[k] for k in ("acc", "ins", "loc")] == ["psa", "psem", "psovi"]
    assert [cs["cat"].cases[k] for k in ("acc", "ins", "loc", "gen_pl")] == ["kočku", "kočkou", "kočce", "koček"]
    assert cs["bicycle"].cases["loc"] == "kole" and cs["horse"].cases["ins"] == "koněm"
    assert cs["ball"].cases["ins"] == "míčem" and cs["beach"].cases["loc"] == "pláži"


def test_every_name_is_found_by_mentions(table):
    """The singular of every concept, in every language, is matched as that concept (after a determiner
    for the forms that need one)."""
    dets = {"en": "the", "de": "die", "fr": "la"}
    for c in table:
        for lang in LANGUAGES:
            n = c.names[lang]
            if n.sg.lower() in n.unmatched:
                continue
            text = f"{dets[lang]} {n.sg}" if n.sg.lower() in n.gated else n.sg
            assert c.id in table.mentions(text, lang), (c.id, lang, text)


# Words shared by two concepts of one language: each is a real homonym of that language, kept on purpose.
SHARED_WORDS = {
    "en": set(),
    "de": {"fliege", "fliegen", "flügel", "flügeln", "schloss", "schlösser", "schlössern", "schlosses"},
    "fr": {"ballon", "ballons", "tuba", "tubas"},
    "ar": {"نسر", "نسور", "نسران", "نسرين", "نسرا", "بجعات", "عجلة", "عجلتان", "عجلتين", "زلاجة", "زلاجات",
           "زلاجتان", "زلاجتين", "درع", "درعان", "درعين", "درعا"},
    "cs": {"balón", "balónu", "balónem", "balóny", "balónů", "balónům", "balónech", "zámek", "zámku", "zámkem",
           "zámky", "zámků", "zámkům", "zámcích", "pila", "pily", "pile", "pilu", "pilou", "pil", "pilám", "pilách",
           "pilami", "raketa", "rakety", "raketě", "raketu", "raketou", "raket", "raketám", "raketách", "raketami",
           "skútr", "skútru", "skútrem", "skútry", "skútrů", "skútrům", "skútrech", "váze", "štít", "štítu",
           "štítem", "štíty", "štítů", "štítům", "štítech"},
}  # fmt: skip


@pytest.mark.parametrize("lang", LANGUAGES)
def test_words_shared_between_concepts_are_the_known_homonyms(table, lang):
    owners = defaultdict(set)
    for c in table:
        n = c.names[lang]
        for w in n.match if lang == "ar" else n.words:
            owners[" ".join(tokens(w, lang))].add(c.id)
    shared = {w for w, ids in owners.items() if len(ids) > 1}
    assert shared == {" ".join(tokens(w, lang)) for w in SHARED_WORDS[lang]}


# ---- mentions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, lang, expected", [
    ("a cat is sitting on a couch", "en", {"cat", "couch"}),
    ("A dog's ball.", "en", {"dog", "ball"}),
    ("two puppies and a kitten", "en", {"dog", "cat"}),
    ("a man eats a hot dog", "en", {"hot_dog"}),  # the longest phrase wins
    ("zwei hunde spielen im schnee", "de", {"dog"}),  # plural
    ("ein Mann mit einem Fahrrad", "de", {"bicycle"}),
    ("ein schäferhund neben einer warteschlange", "de", {"dog"}),  # a safe compound; an excluded one
    ("ein Fußball und ein Fussball", "de", {"ball"}),  # ß and ss
    ("un chien et deux chiens", "fr", {"dog"}),
    ("l'oiseau est sur le vélo", "fr", {"bird", "bicycle"}),  # elision
    ("un homme en train de courir", "fr", set()),  # "en train de" is no train
    ("الكلب يجري على الشاطئ", "ar", {"dog", "beach"}),  # article
    ("رجل يلعب بالكرة مع كلبه", "ar", {"ball", "dog"}),  # proclitic, possessive
    ("كلبان وقطة", "ar", {"dog", "cat"}),  # dual; و "and"
    ("قطه صغيرة", "ar", {"cat"}),  # ة written as ه
    ("المرأة تنظر في مرآة", "ar", {"mirror"}),  # المرأة "the woman" is no mirror
    ("طائرة فوق البحر", "ar", {"airplane"}),  # not طائر "bird" + ه
    ("فقط رجل", "ar", set()),  # فقط "only" is not ف + قط "cat"
    ("muž jede na kole se psem", "cs", {"bicycle", "dog"}),  # locative, instrumental
    ("dvě kočky a tři psi", "cs", {"cat", "dog"}),
    ("chlapec běží kolem stromu", "cs", set()),  # kolem "around" is not the instrumental of kolo
])  # fmt: skip
def test_mentions(text, lang, expected):
    assert mentions(text, lang) == expected


@pytest.mark.parametrize("text, lang", [
    ("the category of a scatter plot", "en"), ("a catalog of dogmas", "en"), ("a cathedral", "en"),
    ("a dogged man", "en"), ("Kategorie", "de"), ("une catégorie", "fr"), ("kategorie", "cs"), ("pestrý", "cs"),
])  # fmt: skip
def test_no_substring_matches(text, lang):
    found = mentions(text, lang)
    assert "cat" not in found and "dog" not in found, found


def test_gated_forms_need_a_determiner_and_to_end_the_noun_phrase():
    assert "watch" in mentions("a man with a watch on his wrist", "en")
    assert "watch" not in mentions("a man watches the dog", "en")
    assert "orange" in mentions("a boy holds an orange", "en")
    assert "orange" not in mentions("a dog with an orange toy", "en")  # the colour
    assert "door" in mentions("un garçon devant la porte", "fr")
    assert "door" not in mentions("un homme porte un chapeau", "fr")  # porte = "wears"


def test_strict_leaves_out_ambiguous_words():
    assert mentions("a man in a red jersey", "en") == {"shirt"}
    assert mentions("a man in a red jersey", "en", strict=True) == set()
    assert mentions("un ballon rouge", "fr") == {"ball", "balloon"}  # French ballon is both
    assert mentions("un ballon rouge", "fr", strict=True) == {"ball"}


def test_names_subject_accepts_the_parent_concept():
    assert concept_of_class(22).id == "eagle" and concept_of_class(22).parent == "bird"
    assert names_subject("a bird on a branch", "en", "eagle")
    assert names_subject("ein Adler", "de", "eagle")
    assert not names_subject("a dog on a branch", "en", "eagle")


# ---- the API ----------------------------------------------------------------------------------------
def test_concept_names_and_words():
    dog = concept_of_class(207)
    assert (dog.name("en"), dog.name("en", plural=True), dog.name("de"), dog.name("fr", plural=True)) == (
        "dog", "dogs", "Hund", "chiens"
    )  # fmt: skip
    assert dog.words("de")[0] == "hund" and "welpen" in dog.words("de")
    assert dog.names["de"].gender == "m" and dog.names["de"].article == "ein"
    assert dog.names["ar"].sg == "كلب" and "كلاب" in dog.words("ar")
    assert concept_of_class(967).names["fr"].article == "du"  # coffee is a mass noun: du café
    table = load_concepts()
    assert table.ids[table.class_concept_indices()[281]] == "cat"


def test_clear_errors():
    with pytest.raises(ConceptTableError, match="no language 'xx'"):
        mentions("a dog", "xx")
    with pytest.raises(ConceptTableError, match="no language 'it'"):
        concept_of_class(1).name("it")
    with pytest.raises(ConceptTableError, match=r"0\.\.999, got 1000"):
        concept_of_class(1000)
    with pytest.raises(ConceptTableError, match="unknown concept 'unicorn'"):
        load_concepts()["unicorn"]


def test_malformed_tables_are_refused(tmp_path):
    data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    del data["concepts"][0]["names"]["cs"]
    with pytest.raises(ConceptTableError, match="has no cs"):
        parse_table(data, "t.json")
    data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    data["classes"][5]["concept"] = "unicorn"
    with pytest.raises(ConceptTableError, match="unknown concepts referenced: unicorn"):
        parse_table(data, "t.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConceptTableError, match="not valid JSON"):
        load_concepts(bad)


def test_the_loader_is_light_and_the_table_ships_with_the_package():
    code = (
        "import sys; from polycap.data.concepts import load_concepts; load_concepts(); "
        "print(','.join(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"data/*.json"' in pyproject and TABLE_PATH.parent.name == "data"
