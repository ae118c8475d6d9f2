"""Search spaces: every shipped space loads, samples buildable networks with
a conditional parameter set, every declared parameter reaches the network,
and a bad space file is a one-line error naming the key."""
import contextlib
import textwrap

import optuna
import pytest
import torch
from optuna.trial import FixedTrial

import nas
from nas.attention import attention_kind
from nas.errors import ConfigError
from nas.search.space import load_space, parse_space, space_names

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED = ["bam", "cbam", "danet", "ea", "eca", "emsa", "mixed", "psa", "sa", "sc", "se", "sk"]
N_TRIALS = 40
N_BLOCKS = 3  # resnet20: three basic blocks per stage


@pytest.fixture(scope="module")
def spaces():
    # loading checks every choice by building it (~0.2 s per space): once per module
    return {name: load_space(name) for name in space_names()}


@pytest.fixture(scope="module")
def sampled(spaces):
    """Per space: N_TRIALS (params, distributions, config) from a random sampler."""
    out = {}
    for name, space in spaces.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trials = []
        for _ in range(N_TRIALS):
            trial = study.ask()
            cfg = space.sample(trial)
            trials.append((dict(trial.params), dict(trial.distributions), cfg))
            study.tell(trial, 0.0)
        out[name] = trials
    return out


class _Filler:
    """Answers ``suggest_categorical`` from ``given``; names not given get the
    first choice. Records exactly the names the space asked for."""

    def __init__(self, given):
        self.given = given
        self.asked = {}

    def suggest_categorical(self, name, choices):
        value = self.given[name] if name in self.given else choices[0]
        self.asked[name] = value
        return value


def _replay(space, params):
    """The config ``params`` give, through a real FixedTrial; names the space
    needs but ``params`` lacks (SK's third kernel after M: 2 -> 3, a new
    type's parameters) are filled with their first choice. Returns the config
    and the trial's suggested params."""
    filler = _Filler(params)
    space.sample(filler)
    trial = FixedTrial(filler.asked)
    cfg = space.sample(trial)
    return cfg, trial.params


def _stage_of(name):
    return int(name.split(".")[0][1:])


def _type_of(name):
    """``s1.se.r`` -> se, ``s1.b0.sk.kernels0`` -> sk, ``s1.type`` -> None."""
    parts = name.split(".")
    if parts[1] == "type":
        return None
    return parts[2] if parts[1].startswith("b") and parts[1][1:].isdigit() else parts[1]


def _expected_names(space, params):
    """The parameter names a stage-placement trial must have, from the space's
    declaration and the documented naming scheme (written independently of
    SearchSpace.sample)."""
    names = set()
    for s in space.stages:
        types = space.stage_types[s]
        if len(types) > 1:
            names.add(f"s{s}.type")
            t = params[f"s{s}.type"]
        else:
            t = types[0]
        if t == "none":
            continue
        specs = space.params[s].get(t, {})
        for pname, spec in specs.items():
            if not spec.searched:
                continue
            per_block = spec.per_block and attention_kind(t) != "transition"
            prefixes = [f"s{s}.b{b}.{t}.{pname}" for b in range(N_BLOCKS)] if per_block else [f"s{s}.{t}.{pname}"]
            if spec.is_list:
                if (t, pname) == ("sk", "kernels"):  # one kernel per branch
                    m = specs.get("M")
                    length = 2 if m is None else params[f"s{s}.sk.M"] if m.searched else m.choices[0]  # SK's default M = 2
                else:  # PSA: four parts, one kernel and one group count each
                    assert t == "psa", (t, pname)
                    length = 4
                names |= {f"{p}{i}" for p in prefixes for i in range(length)}
            else:
                names |= set(prefixes)
    return names


@contextlib.contextmanager
def _one_thread():
    # a 2-image batch gains nothing from threads, and on a busy machine
    # intra-op threads waiting for each other make it 100x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- shipped spaces


def test_shipped_spaces_are_exactly_these():
    assert space_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_loads_and_validates(name, spaces):
    space = spaces[name]
    assert space.name == name and space.backbone == "resnet20"
    assert space.description and "\n" not in space.description
    if name == "mixed":
        assert set(space.types) == set(nas.attention.attention_names())
    else:
        assert space.types == ["none", name]
    assert space.stages and all(space.stage_types[s] for s in space.stages)
    assert space.objectives[:2] == ["accuracy", "macs"]
    assert space.fidelity.rungs == sorted(space.fidelity.rungs) and space.fidelity.eta >= 2
    # something is actually searched
    assert any(len(space.stage_types[s]) > 1 for s in space.stages)


@pytest.mark.parametrize("name", SHIPPED)
def test_sampled_configs_build_and_run(name, sampled):
    trials = sampled[name]
    assert len(trials) == N_TRIALS
    hashes = set()
    for i, (_, _, cfg) in enumerate(trials):
        model = nas.build_model(cfg)
        hashes.add(cfg.structure_hash())
        if i < 3:
            model.eval()
            with torch.no_grad(), _one_thread():
                out = model(torch.randn(2, 3, 32, 32))
            assert out.shape == (2, 10) and torch.isfinite(out).all()
    # the sampler really explores: not one architecture 40 times
    assert len(hashes) > N_TRIALS // 4


@pytest.mark.parametrize("name", SHIPPED)
def test_sampled_config_follows_its_params(name, spaces, sampled):
    space = spaces[name]
    for params, _, cfg in sampled[name]:
        for s in space.stages:
            stage = cfg.stages[s - 1]
            t = params.get(f"s{s}.type", space.stage_types[s][0])
            if t != "none" and attention_kind(t) == "transition":
                assert stage.transition is not None and stage.transition.type == t
                assert all(b.attention.type == "none" for b in stage.blocks)
            else:
                assert stage.transition is None
                assert [b.attention.type for b in stage.blocks] == [t] * len(stage.blocks)
        for s in range(1, len(cfg.stages) + 1):
            if s not in space.stages:  # stages the space does not search stay plain
                assert cfg.stages[s - 1].transition is None
                assert all(b.attention.type == "none" for b in cfg.stages[s - 1].blocks)


@pytest.mark.parametrize("name", SHIPPED)
def test_params_are_conditional_on_the_chosen_type(name, spaces, sampled):
    space = spaces[name]
    for params, _, _ in sampled[name]:
        assert set(params) == _expected_names(space, params), params
        for pname in params:
            t = _type_of(pname)
            if t is not None:  # every parameter belongs to the type its stage chose
                assert params.get(f"s{_stage_of(pname)}.type", t) == t, pname


def test_mixed_space_conditional_params(spaces, sampled):
    space = spaces["mixed"]
    seen = {params["s1.type"] for params, _, _ in sampled["mixed"]}
    assert {"none", "se", "sk"} <= seen and len(seen) >= 6  # the check below was exercised
    for params, _, _ in sampled["mixed"]:
        t = params["s1.type"]
        s1 = {n for n in params if n.startswith("s1.") and n != "s1.type"}
        if t == "none":
            assert not s1
        else:
            assert all(_type_of(n) == t for n in s1)
    # by hand: SE in stage 1, nothing elsewhere; stray SK / CBAM values are not asked for
    given = {"s1.type": "se", "s1.se.position": "post", "s1.se.r": 8, "s2.type": "none", "s3.type": "none",
             "s1.sk.G": 4, "s1.cbam.r": 4, "s1.b0.sk.kernels0": 5}
    trial = FixedTrial(given)
    cfg = space.sample(trial)
    assert set(trial.params) == {"s1.type", "s1.se.position", "s1.se.r", "s2.type", "s3.type"}
    for block in cfg.stages[0].blocks:
        assert (block.attention.type, block.attention.position, block.attention.params) == ("se", "post", {"r": 8})
    trial = FixedTrial({"s1.type": "none", "s1.se.r": 8, "s2.type": "none", "s3.type": "none"})
    cfg = space.sample(trial)
    assert set(trial.params) == {"s1.type", "s2.type", "s3.type"}
    assert cfg.structure_hash() == nas.preset_config("resnet20").structure_hash()


def test_mixed_offers_danet_and_bam_only_where_they_fit(spaces, sampled):
    space = spaces["mixed"]
    # stage 1 of resnet20 is 32x32 = 1024 positions > DANet's 256; BAM goes between stages
    assert "danet" not in space.stage_types[1]
    assert "bam" not in space.stage_types[3]
    assert "danet" in space.stage_types[2] and "danet" in space.stage_types[3]
    assert "bam" in space.stage_types[1] and "bam" in space.stage_types[2]
    for params, dists, cfg in sampled["mixed"]:
        assert "danet" not in dists["s1.type"].choices
        assert "bam" not in dists["s3.type"].choices
        assert "danet" in dists["s2.type"].choices and "bam" in dists["s2.type"].choices
        assert all(b.attention.type != "danet" for b in cfg.stages[0].blocks)
        assert cfg.stages[2].transition is None


# --------------------------------------------------------------------------- every parameter matters


@pytest.mark.parametrize("name", SHIPPED)
def test_every_declared_parameter_reaches_the_model(name, spaces, sampled):
    """Changing one sampled parameter to another allowed choice, all else
    equal, gives another architecture."""
    space = spaces[name]
    trials = sampled[name]
    all_names = sorted({n for params, _, _ in trials for n in params})
    assert all_names
    checked = 0
    for pname in all_names:
        params, dists, cfg = next(t for t in trials if pname in t[0])
        base, suggested = _replay(space, params)
        assert suggested == params  # replaying a trial asks for exactly its params
        assert base.structure_hash() == cfg.structure_hash()
        for choice in dists[pname].choices:
            if choice == params[pname] and type(choice) is type(params[pname]):
                continue
            changed, _ = _replay(space, {**params, pname: choice})
            assert changed.structure_hash() != base.structure_hash(), f"{pname}: {params[pname]!r} -> {choice!r}"
            checked += 1
    assert checked >= len(all_names)


def test_every_searched_declaration_is_sampled_somewhere(spaces, sampled):
    # so the test above covers each declared parameter of each single-type
    # space at least once (mixed has too many combinations for 40 trials)
    for name in SHIPPED:
        if name == "mixed":
            continue
        space = spaces[name]
        seen = {(_stage_of(n), _type_of(n), n.split(".")[-1].rstrip("0123456789"))
                for params, _, _ in sampled[name] for n in params if _type_of(n)}
        for s in space.stages:
            for t in space.stage_types[s]:
                for pname, spec in space.params[s].get(t, {}).items():
                    if spec.searched:
                        assert (s, t, pname) in seen, (name, s, t, pname)


def test_sk_m_sets_the_number_of_kernels(spaces):
    space = spaces["sk"]
    common = {"s1.type": "sk", "s1.sk.G": 4, "s1.sk.r": 8, "s1.sk.L": 16, "s2.type": "none", "s3.type": "none"}
    kernels = {b: [3, 5, 7][b:] + [3, 5, 7][:b] for b in range(N_BLOCKS)}  # a different list per block
    for m in (2, 3):
        given = {**common, "s1.sk.M": m,
                 **{f"s1.b{b}.sk.kernels{i}": kernels[b][i] for b in range(N_BLOCKS) for i in range(m)}}
        trial = FixedTrial(given)
        cfg = space.sample(trial)
        assert trial.params == given  # one kernel name per block per branch, nothing else
        for b, block in enumerate(cfg.stages[0].blocks):
            assert block.attention.type == "sk"
            assert block.attention.params == {"M": m, "G": 4, "r": 8, "L": 16, "kernels": kernels[b][:m]}
        nas.build_model(cfg)
    # M = 3 needs a third kernel per block: without it FixedTrial has no value to give
    given = {**common, "s1.sk.M": 3, **{f"s1.b{b}.sk.kernels{i}": 3 for b in range(N_BLOCKS) for i in range(2)}}
    with pytest.raises(ValueError, match=r"s1\.b0\.sk\.kernels2"):
        space.sample(FixedTrial(given))
    # and changing M alone changes the architecture
    two, _ = _replay(space, {**common, "s1.sk.M": 2})
    three, _ = _replay(space, {**common, "s1.sk.M": 3})
    assert two.structure_hash() != three.structure_hash()


def _rotated(b):
    """PSA's four part kernels, a different order in each block."""
    return ([3, 5, 7, 9] * 2)[b:b + 4]


def test_psa_list_parameters_get_one_name_per_element(spaces):
    space = spaces["psa"]
    given = {"s1.type": "none", "s2.type": "psa", "s3.type": "none", "s2.psa.r": 4,
             **{f"s2.psa.groups{i}": g for i, g in enumerate([1, 2, 4, 8])},
             **{f"s2.b{b}.psa.kernels{i}": k for b in range(N_BLOCKS) for i, k in enumerate(_rotated(b))}}
    trial = FixedTrial(given)
    cfg = space.sample(trial)
    assert trial.params == given
    for b, block in enumerate(cfg.stages[1].blocks):
        assert block.attention.params == {"r": 4, "groups": [1, 2, 4, 8], "kernels": _rotated(b)}
    nas.build_model(cfg)


def test_fixed_values_are_not_searched_but_reach_the_model():
    space = parse_space(textwrap.dedent("""\
        backbone: resnet20
        stages: [3]
        types: [none, sk]
        params:
          sk: {M: 3, G: 8, r: [8, 16]}
        """))
    trial = FixedTrial({"s3.type": "sk", "s3.sk.r": 16})
    cfg = space.sample(trial)
    assert set(trial.params) == {"s3.type", "s3.sk.r"}
    assert cfg.stages[2].blocks[0].attention.params == {"M": 3, "G": 8, "r": 16}


def test_block_placement_names_one_type_per_block():
    space = parse_space(textwrap.dedent("""\
        backbone: resnet20
        stages: [2]
        placement: block
        types: [none, se, eca]
        params:
          se: {r: [4, 8]}
          eca: {k_size: {choices: [3, 5], per_block: true}}
        """))
    given = {"s2.b0.type": "se", "s2.b1.type": "eca", "s2.b2.type": "se", "s2.se.r": 4, "s2.b1.eca.k_size": 5}
    trial = FixedTrial(given)
    cfg = space.sample(trial)
    assert trial.params == given  # se's r is per stage: one name shared by blocks 0 and 2
    assert [(b.attention.type, b.attention.params) for b in cfg.stages[1].blocks] == [
        ("se", {"r": 4}), ("eca", {"k_size": 5}), ("se", {"r": 4})]


# --------------------------------------------------------------------------- bad space files

BASE = "backbone: resnet20\ntypes: [none, se]\n"
SK = "backbone: resnet20\ntypes: [none, sk]\n"

BAD = [
    # (space text, fragments the message must contain)
    (BASE + "foo: 1\n", ["unknown key 'foo'", "allowed:", "types", "fidelity"]),
    ("backbone: resnet20\ntypes: [none, xx]\n", ["types", "'xx'", "allowed:", "se", "sk"]),
    (BASE + "params: {se: {q: [1]}}\n", ["params.se.q", "allowed:", "r", "squeeze"]),
    (BASE + "params: {se: {r: []}}\n", ["params.se.r", "empty choices"]),
    (SK + "params: {sk: {G: [4, 3]}}\n", ["params.sk.G", "3", "stage 1", "allowed: 1, 2, 4, 8, 16"]),
    (BASE + "params: {se: {r: [\"x\"]}}\n", ["params.se.r", "'x'", "integer"]),
    (BASE + "params: {se: {position: [middle]}}\n", ["params.se.position", "'middle'", "standard"]),
    (BASE + "stages: [4]\n", ["stages", "4", "allowed: 1, 2, 3"]),
    (BASE + "stages: [0, 1]\n", ["stages", "0", "allowed: 1, 2, 3"]),
    ("backbone: resnet20\nstages: [1]\ntypes: [none, danet]\n", ["types", "'danet'", "[1]", "256"]),
    ("backbone: resnet20\nstages: [3]\ntypes: [none, bam]\n", ["types", "'bam'", "[3]", "transition"]),
    (BASE + "sampler: grid\n", ["sampler", "'grid'", "nsga2, tpe, random"]),
    (BASE + "objectives: [macs, accuracy]\n", ["objectives", "[accuracy, macs|latency]"]),
    (BASE + "objectives: [accuracy, macs, flops]\n", ["objectives", "'flops'", "latency"]),
    (BASE + "constraints: {max_flops: 1e6}\n", ["constraints.max_flops", "max_macs, max_params"]),
    (BASE + "fidelity: {epochs: 3}\n", ["fidelity.epochs", "rungs", "eta"]),
    (BASE + "fidelity: {rungs: [3, 1]}\n", ["fidelity.rungs", "[3, 1]", "increasing"]),
    (BASE + "fidelity: {rungs: [1, 1]}\n", ["fidelity.rungs", "increasing"]),
    (BASE + "fidelity: {eta: 1}\n", ["fidelity.eta", ">= 2", "1"]),
    ("backbone: resnet20\nstages: [2]\ntypes: [none, danet]\nparams: {danet: {position: [standard, pre]}}\n",
     ["params.danet.position", "'pre'", "stage 2", "256"]),
]


@pytest.mark.parametrize("text,fragments", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_space_is_a_one_line_error_naming_the_key(text, fragments):
    with pytest.raises(ConfigError) as info:
        parse_space(text, source="my_space.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("my_space.yaml: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_malformed_yaml_names_the_line():
    text = "backbone: resnet20\ntypes: [none, se\nparams: {}\n"  # the list is not closed
    with pytest.raises(ConfigError, match=r"malformed YAML at line 3\b") as info:
        parse_space(text)
    assert "\n" not in str(info.value)


# Every value, fixed ones and first choices included, is tried on its own and named by its key.
@pytest.mark.parametrize("text,key,value", [
    pytest.param(SK + "params: {sk: {G: [3]}}\n", "params.sk.G", "3", id="sk-G-[3]"),
    pytest.param(SK + "params: {sk: {G: 3}}\n", "params.sk.G", "3", id="sk-G-3-fixed"),
    pytest.param(SK + "params: {sk: {G: [3, 4]}}\n", "params.sk.G", "3", id="sk-G-[3,4]"),
    pytest.param(BASE + "params: {se: {r: [32]}}\n", "params.se.r", "32", id="se-r-[32]"),
    pytest.param(SK + "params: {sk: {G: [4, 3]}}\n", "params.sk.G", "3", id="sk-G-[4,3]"),
    pytest.param(BASE + "params: {se: {r: [4, 32]}}\n", "params.se.r", "32", id="se-r-[4,32]"),
])
def test_value_that_does_not_fit_names_its_key(text, key, value):
    with pytest.raises(ConfigError) as info:
        parse_space(text)
    message = str(info.value)
    assert "\n" not in message
    assert f"{key}: {value}" in message, message


def test_bad_stage_param_names_the_stage_params_key():
    text = SK + "params: {sk: {G: [4]}}\nstage_params: {1: {sk: {G: [4, 3]}}}\n"
    with pytest.raises(ConfigError) as info:
        parse_space(text)
    assert "stage_params.1.sk.G" in str(info.value), str(info.value)


# --------------------------------------------------------------------------- loading


def test_load_space_by_path(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent("""\
        description: a small
          test space
        backbone: resnet20
        stages: [2, 3]
        types: [none, eca]
        params:
          eca: {k_size: [3, 5]}
        fidelity: {rungs: [1, 2, 4], eta: 2}
        sampler: random
        """))
    for ref in (path, str(path)):
        space = load_space(ref)
        assert space.name == "tiny" and space.path == str(path)
        assert space.description == "a small test space"
        assert space.stages == [2, 3] and space.stage_types == {2: ["none", "eca"], 3: ["none", "eca"]}
        assert space.fidelity.rungs == [1.0, 2.0, 4.0] and space.fidelity.eta == 2
        assert space.sampler == "random"
        assert space.source == path.read_text()
    # not found, by path
    with pytest.raises(ConfigError, match="space file not found") as info:
        load_space(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(info.value)
    # an error inside names the file
    (tmp_path / "bad.yaml").write_text("backbone: resnet20\ntypes: [none, se]\nsampler: grid\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: sampler: 'grid'"):
        load_space(tmp_path / "bad.yaml")


def test_load_shipped_space_by_name_matches_its_file(spaces):
    from nas.search.space import SPACES_DIR

    space = spaces["sk"]
    assert space.path == str(SPACES_DIR / "sk.yaml")
    assert space.source == (SPACES_DIR / "sk.yaml").read_text()


def test_unknown_space_name_lists_the_available_ones():
    with pytest.raises(ConfigError) as info:
        load_space("skk")
    message = str(info.value)
    assert "'skk'" in message and "\n" not in message
    assert ", ".join(SHIPPED) in message
