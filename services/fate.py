"""FATE job configurations -> fedsuite jobs, so a FATE user's conf runs as it is.

Two shapes are read: the DSL v2 conf (``dsl_version: 2``, ``role``, ``job_parameters.common``,
``component_parameters.common`` and ``.role.<role>.<index>``) and the 1.x algorithm conf
(flat ``job_parameters``, ``role_parameters.<role>.args.data`` and per-party lists,
``algorithm_parameters`` or ``component_parameters.common``). A conf carries no DSL, so a
component's module is read from its name as FATE's examples write it (``hetero_lr_0``,
``homo_lr_0``, ``intersection_0``/``intersect_0``, ``reader_0``, ``data_transform_0``/
``dataio_0``, ``evaluation_0``).

What a parameter meant in FATE is kept: an unset one takes FATE's default, not fedsuite's
(``encrypt_param.key_length`` unset meant 1024 bits, and a note says why fedsuite's own
default is 2048). A setting fedsuite cannot honour is refused when it would change what the
job is (cross-validation, a left join, stepwise selection) and reported in a note when it
changes only how it trains; FATE runtime settings (``work_mode``, engines) are noted and
dropped. Every problem of a conf is reported at once.

FATE names parties by number (9999, 10000) and fedsuite by id: a ``fedsuite`` block in the
conf (``"fedsuite": {"parties": {"9999": "bank"}, "datasets": {"breast_hetero_guest":
"bank_rows"}, "name": "..."}``) or the CLI's ``--party 9999=bank`` maps them. A dataset is
the FATE table's name unless ``fedsuite.datasets`` maps it (by ``name`` or
``namespace.name``). FATE's arbiter is not mapped: fedsuite's is the coordinator's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcore.config import UnknownKeys, unknown_keys_message
from fedcore.vertical.params import HeteroLRParams

_TOP_KEYS = {"dsl_version", "initiator", "role", "job_parameters", "component_parameters", "role_parameters",
             "algorithm_parameters", "fedsuite"}
_FEDSUITE_KEYS = ["datasets", "name", "parties"]
_ROLES = ("guest", "host", "arbiter")
#: FATE Flow's job parameters that describe FATE's own runtime; they mean nothing to fedsuite.
_RUNTIME_PARAMETERS = {
    "work_mode", "backend", "computing_engine", "federation_engine", "storage_engine", "engines_address",
    "federated_mode", "federation_info", "task_cores", "task_parallelism", "computing_partitions",
    "federated_status_collect_type", "federated_data_exchange_type", "auto_retries", "auto_retry_delay",
    "timeout", "eggroll_run", "spark_run", "rabbitmq_run", "pulsar_run", "adaptation_parameters",
    "processors_per_node", "task_nodes", "dsl_version", "inheritance_info", "model_version_suffix",
    "assistant_role", "map_table_name", "map_namespace", "job_type",
}
_COMPONENT = re.compile(r"^(?P<kind>[a-z][a-z_]*?)_(?P<n>\d+)$")
_KINDS = {"hetero_lr": "hetero_lr", "homo_lr": "homo_lr", "intersection": "intersection",
          "intersect": "intersection", "reader": "reader", "data_transform": "data_transform",
          "dataio": "data_transform", "evaluation": "evaluation"}
_SECURITY_NOTE = ("fedsuite's own default is 2048: a 1024-bit RSA or Paillier modulus gives about 80 bits of "
                  "security, below NIST's 112-bit minimum (SP 800-57), and 2048 bits is the least recommended")


class FateConfError(ValueError):
    """A FATE conf that cannot become a fedsuite job; the message lists every problem."""


@dataclass
class Translation:
    """The fedsuite job a FATE conf became (job-file values) and what its author should know."""

    job: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def is_fate_conf(values: Any) -> bool:
    """Whether parsed job-file values are a FATE conf (fedsuite job files never use these keys)."""
    return isinstance(values, Mapping) and bool(set(values) & (_TOP_KEYS - {"fedsuite"}))


# -- parameter rules -----------------------------------------------------------------------------
# For each component kind: FATE parameter (dotted below nested params) -> what becomes of it.
# A rule for "x." covers every key under x. A value that changes what the job is must equal `require`.


@dataclass(frozen=True)
class _Rule:
    to: str = ""  # the fedsuite parameter it becomes ("": none)
    convert: Callable[[Any], Any] | None = None
    require: tuple[Any, ...] = ()  # the only values accepted (when set)
    why: str = ""  # said when the key is not applied or a required value is not met
    same: tuple[Any, ...] = ()  # values that mean what fedsuite does anyway (no note)


def _upper_penalty(value: Any) -> Any:
    return "none" if value is None or (isinstance(value, str) and value.lower() == "none") else (
        value.upper() if isinstance(value, str) else value)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


_NO_EFFECT = _Rule(why="no effect on a fedsuite model")
_SAME_RESULT = _Rule(why="fedsuite computes the same intersection its own way")
_NO_CV = _Rule(require=(False,), why="fedsuite has no cross-validation: set need_cv false")
_NO_STEPWISE = _Rule(require=(False,), why="fedsuite has no stepwise selection: set need_stepwise false")
_COMMON_LR = {
    "cv_param.need_cv": _NO_CV, "cv_param.": _NO_EFFECT, "stepwise_param.need_stepwise": _NO_STEPWISE,
    "stepwise_param.": _NO_EFFECT, "predict_param.": _NO_EFFECT, "callback_param.": _NO_EFFECT,
    "validation_freqs": _NO_EFFECT, "metrics": _NO_EFFECT, "use_first_metric_only": _NO_EFFECT,
    "multi_class": _Rule(convert=_lower, require=("ovr",), why="fedsuite trains one binary or softmax model"),
    "early_stopping_rounds": _Rule(require=(None,), why="it needs FATE's validation data: leave it unset"),
}
_HETERO_LR = {
    **_COMMON_LR,
    "penalty": _Rule("penalty", _upper_penalty), "alpha": _Rule("alpha"), "tol": _Rule("tol"),
    "optimizer": _Rule("optimizer", _lower), "batch_size": _Rule("batch_size"),
    "learning_rate": _Rule("learning_rate"), "max_iter": _Rule("max_iter"),
    "early_stop": _Rule("early_stop", _lower), "decay": _Rule("decay"), "decay_sqrt": _Rule("decay_sqrt"),
    "init_param.init_method": _Rule("init_method", _lower), "init_param.fit_intercept": _Rule("fit_intercept"),
    "init_param.random_seed": _Rule("seed"), "init_param.init_const": _Rule(),  # read with init_method "const"
    "encrypt_param.key_length": _Rule("key_length"),
    "encrypt_param.method": _Rule(convert=_lower, require=("paillier", "ipcl"),
                                  why="hetero LR always encrypts with Paillier"),
    "batch_strategy": _Rule(convert=_lower, require=("full",), why="fedsuite walks every batch of the aligned "
                                                                   "set each epoch"),
    "shuffle": _NO_EFFECT, "masked_rate": _NO_EFFECT, "floating_point_precision": _NO_EFFECT,
    "sqn_param.": _NO_EFFECT, "encrypted_mode_calculator_param.": _NO_EFFECT,
}
_HOMO_NOT_APPLIED = _Rule(why="fedsuite's horizontal jobs train each round with plain SGD at a constant "
                              "learning rate for a fixed number of rounds")
_HOMO_LR = {
    **_COMMON_LR,
    "penalty": _Rule("penalty", _upper_penalty), "alpha": _Rule("alpha"), "learning_rate": _Rule("learning_rate"),
    "batch_size": _Rule("batch_size"), "max_iter": _Rule("max_iter"), "aggregate_iters": _Rule("aggregate_iters"),
    "encrypt_param.method": _Rule("secure_aggregation", _lower, require=(None, "paillier"),
                                  why="fedsuite protects horizontal updates with Paillier or not at all"),
    "encrypt_param.key_length": _Rule("key_bits"),
    "optimizer": _Rule(convert=_lower, why=_HOMO_NOT_APPLIED.why, same=("sgd",)),
    "decay": _Rule(why=_HOMO_NOT_APPLIED.why, same=(0,)), "decay_sqrt": _HOMO_NOT_APPLIED,
    "early_stop": _HOMO_NOT_APPLIED, "tol": _HOMO_NOT_APPLIED, "init_param.": _HOMO_NOT_APPLIED,
    "re_encrypt_batches": _NO_EFFECT,
    "use_proximal": _Rule(require=(False,), why="fedsuite has no FedProx term: set use_proximal false"),
    "mu": _NO_EFFECT,
}
_INTERSECTION = {
    "intersect_method": _Rule("intersect_method", _lower, require=("rsa", "dh", "ecdh", "raw"),
                              why="fedsuite aligns by RSA blind-signature PSI"),
    "rsa_params.key_length": _Rule("psi_key_length"),
    "cardinality_only": _Rule(require=(False,), why="fedsuite trains on the intersection; it has no "
                                                     "cardinality-only job"),
    "join_method": _Rule(convert=_lower, require=("inner_join",), why="fedsuite trains on the rows both sides hold"),
    **{key: _SAME_RESULT for key in (
        "rsa_params.", "dh_params.", "ecdh_params.", "raw_params.", "intersect_cache_param.",
        "intersect_preprocess_params.", "encode_params.", "sync_intersect_ids", "only_output_key", "join_role",
        "random_bit", "with_encode", "repeated_id_process", "repeated_id_owner", "allow_info_share", "info_owner",
        "with_sample_id", "run_cache", "new_sample_id", "sample_id_generator", "sync_cardinality",
        "cardinality_method", "run_preprocess")},
}
_DATA_TRANSFORM_NOTE = "in fedsuite the party's dataset config says how to read its CSV (label, id_column)"
_RULES: dict[str, dict[str, _Rule]] = {"hetero_lr": _HETERO_LR, "homo_lr": _HOMO_LR, "intersection": _INTERSECTION}

#: What FATE 1.x used for a parameter left unset (LogisticParam, InitParam, EncryptParam up to 1.11.3).
_FATE_HETERO_DEFAULTS = {"penalty": "L2", "alpha": 1.0, "tol": 1e-4, "optimizer": "rmsprop", "batch_size": -1,
                         "learning_rate": 0.01, "max_iter": 100, "early_stop": "diff", "decay": 1.0,
                         "decay_sqrt": True, "init_method": "random_uniform", "fit_intercept": True,
                         "key_length": 1024}
_FATE_HOMO_DEFAULTS = {"penalty": "L2", "alpha": 1.0, "learning_rate": 0.01, "batch_size": -1, "max_iter": 100,
                       "aggregate_iters": 1}
_HOMO_DIFFERENT = {"penalty", "alpha", "learning_rate", "max_iter"}  # FATE's default is not fedsuite's
_FATE_PSI_KEY_LENGTH = 1024
_FATE_NAMES = {"init_method": "init_param.init_method", "fit_intercept": "init_param.fit_intercept",
               "seed": "init_param.random_seed", "key_length": "encrypt_param.key_length",
               "psi_key_length": "rsa_params.key_length"}


def _kind_of(component: str) -> str | None:
    match = _COMPONENT.match(component)
    return _KINDS.get(match.group("kind")) if match else None


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _rule(rules: Mapping[str, _Rule], key: str) -> _Rule | None:
    if key in rules:
        return rules[key]
    group = key.split(".")[0] + "."
    return rules.get(group) if "." in key else None


class _Reader:
    """Walks one conf, collecting every problem and note instead of stopping at the first."""

    def __init__(self, conf: Mapping[str, Any], parties: Mapping[str, str]) -> None:
        self.conf = conf
        self.unknown: list[UnknownKeys] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.unmapped: list[tuple[str, str]] = []  # (FATE party id, role) without a fedsuite party
        self._keys(conf, "", sorted(_TOP_KEYS))
        extension = self._mapping(conf.get("fedsuite", {}), "fedsuite")
        self._keys(extension, "fedsuite", _FEDSUITE_KEYS)
        self.extension = extension
        self.parties = {str(k): str(v) for k, v in self._mapping(extension.get("parties", {}), "fedsuite.parties").items()}
        self.parties.update(parties)
        self.datasets = {str(k): str(v) for k, v in
                         self._mapping(extension.get("datasets", {}), "fedsuite.datasets").items()}

    def _mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problems.append(f"{where}: expected a mapping, got {value!r}")
            return {}
        return value

    def _keys(self, values: Mapping[str, Any], where: str, known: list[str]) -> None:
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            self.unknown.append((where, unknown, known))

    def role_ids(self) -> dict[str, list[str]]:
        roles = self._mapping(self.conf.get("role"), "role")
        self._keys(roles, "role", list(_ROLES))
        ids: dict[str, list[str]] = {}
        for role in _ROLES:
            value = roles.get(role, [])
            if not isinstance(value, list) or not all(isinstance(i, int | str) and not isinstance(i, bool)
                                                      for i in value):
                self.problems.append(f"role.{role}: expected a list of party ids, got {value!r}")
                value = []
            ids[role] = [str(i) for i in value]
        return ids

    def job_parameters(self) -> dict[str, Any]:
        """v2's ``common`` (a ``role`` part only names runtime settings) or v1's flat mapping."""
        params = self._mapping(self.conf.get("job_parameters"), "job_parameters")
        where = "job_parameters"
        if "common" in params or "role" in params:
            self._keys(params, where, ["common", "role"])
            if params.get("role"):
                self.notes.append("job_parameters.role: per-party FATE runtime settings are ignored")
            params, where = self._mapping(params.get("common"), "job_parameters.common"), "job_parameters.common"
        unknown = [k for k in params if k not in _RUNTIME_PARAMETERS | {"model_id", "model_version"}]
        if unknown:  # FATE Flow has dozens of runtime settings: name the ones that matter here
            self.unknown.append((where, sorted(unknown), ["job_type", "model_id", "model_version",
                                                          "work_mode and FATE Flow's other runtime settings"]))
        ignored = sorted(k for k in params if k in _RUNTIME_PARAMETERS and k != "job_type")
        if ignored:
            self.notes.append(f"FATE runtime settings mean nothing to fedsuite and are ignored: {', '.join(ignored)}")
        return dict(params)

    def components(self) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[tuple[str, int], dict[str, Any]]]:
        """({component: (kind, common parameters)}, {(role, party index): {component: parameters}})."""
        common: dict[str, tuple[str, dict[str, Any]]] = {}
        by_party: dict[tuple[str, int], dict[str, Any]] = {}
        v2 = self._mapping(self.conf.get("component_parameters"), "component_parameters")
        self._keys(v2, "component_parameters", ["common", "role"])
        for where, block in (("component_parameters.common", v2.get("common")),
                             ("algorithm_parameters", self.conf.get("algorithm_parameters"))):
            for name, params in self._mapping(block, where).items():
                kind = self.kind(name, f"{where}.{name}")
                if kind:
                    common[name] = (kind, dict(self._mapping(params, f"{where}.{name}")))
        roles = self._mapping(v2.get("role"), "component_parameters.role")
        self._keys(roles, "component_parameters.role", list(_ROLES))
        for role, indexed in roles.items():
            for index, params in self._mapping(indexed, f"component_parameters.role.{role}").items():
                where = f"component_parameters.role.{role}.{index}"
                for i in self._indexes(str(index), where):
                    by_party.setdefault((str(role), i), {}).update(self._mapping(params, where))
        v1 = self._mapping(self.conf.get("role_parameters"), "role_parameters")
        self._keys(v1, "role_parameters", list(_ROLES))
        for role, params in v1.items():
            where = f"role_parameters.{role}"
            for name, values in self._mapping(params, where).items():
                if name == "args":
                    self._v1_tables(str(role), self._mapping(values, f"{where}.args"), by_party)
                    continue
                for key, per_party in self._mapping(values, f"{where}.{name}").items():  # one value per party
                    for i, value in enumerate(per_party if isinstance(per_party, list) else [per_party]):
                        by_party.setdefault((str(role), i), {}).setdefault(name, {})[key] = value
        return common, by_party

    def merge_party_params(self, common: dict[str, tuple[str, dict[str, Any]]],
                           by_party: Mapping[tuple[str, int], dict[str, Any]]) -> None:
        """Per-party parameters of a translated component join the common ones when every party agrees
        (FATE 1.x confs often repeat intersection settings per role); fedsuite has one set per job."""
        given: dict[str, list[tuple[str, Any]]] = {}
        for (role, index), params in by_party.items():
            for name, values in params.items():
                kind = self.kind(name, f"parameters of {role} {index}: {name}")
                if kind in _RULES:
                    given.setdefault(name, []).append((f"{role} {index}", values))
        for name, values in given.items():
            kind = _kind_of(name) or ""
            first = values[0][1]
            own = common.get(name, (kind, {}))[1]
            clash = sorted(k for k in first if k in own and own[k] != first[k])
            if any(v != first for _, v in values) or clash or not isinstance(first, Mapping):
                self.problems.append(f"{', '.join(p for p, _ in values)}: {name} parameters must be the same for "
                                     f"every party in fedsuite: move them to component_parameters.common.{name}")
            else:
                common[name] = (kind, {**first, **own})

    def _indexes(self, index: str, where: str) -> list[int]:
        if index == "all":
            return [-1]
        if not re.fullmatch(r"\d+(\|\d+)*", index):
            self.problems.append(f"{where}: a party index is a number, several joined by '|', or 'all'")
            return []
        return [int(i) for i in index.split("|")]

    def _v1_tables(self, role: str, args: Mapping[str, Any], by_party: dict[tuple[str, int], dict[str, Any]]) -> None:
        where = f"role_parameters.{role}.args"
        self._keys(args, where, ["data"])
        data = self._mapping(args.get("data"), f"{where}.data")
        self._keys(data, f"{where}.data", ["data", "eval_data", "train_data", "validate_data"])
        train = "train_data" in data or "data" in data
        for key in ("eval_data", "validate_data"):
            if key in data and train:
                self.notes.append(f"{where}.data.{key} is not used: fedsuite reports the train metrics on the guest")
        tables = data.get("train_data", data.get("data", data.get("eval_data", [])))  # a 1.x predict reads eval_data
        if not isinstance(tables, list):
            self.problems.append(f"{where}.data.train_data: expected a list of tables, got {tables!r}")
            return
        for i, table in enumerate(tables):
            by_party.setdefault((role, i), {})["reader_0"] = {"table": table}

    def kind(self, name: str, where: str) -> str | None:
        """The component's module as fedsuite knows it, or None (with a problem) for one it has no counterpart of."""
        kind = _kind_of(name)
        if kind is None:
            self.problems.append(f"{where}: fedsuite has no counterpart of this component (it translates hetero_lr, "
                                 "homo_lr, intersection, reader, data_transform/dataio and evaluation)")
        return kind

    def translate_params(self, name: str, kind: str, params: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The fedsuite parameters a translated component's FATE parameters become."""
        rules = _RULES[kind]
        out: dict[str, Any] = {}
        unknown: list[str] = []
        not_applied: dict[str, list[str]] = {}
        flat = _flatten(params)
        for key, value in flat.items():
            rule = _rule(rules, key)
            if rule is None:
                unknown.append(key)
                continue
            if rule.convert is not None:
                value = rule.convert(value)
            if rule.require and value not in rule.require:
                allowed = " or ".join("null" if v is None else str(v).lower() for v in rule.require)
                self.problems.append(f"{where}.{key}: must be {allowed} in fedsuite (got {flat[key]!r}): {rule.why}")
            elif rule.to:
                if value is not None:  # FATE's null: its default
                    out[rule.to] = value
            elif rule.why and not rule.require and value not in rule.same:
                group = key.split(".")[0] + "."
                used = key in rules or any(k.startswith(group) and r.to for k, r in rules.items())
                shown = key if used else group[:-1]  # a group none of whose keys is used is named once
                keys = not_applied.setdefault(rule.why, [])
                if shown not in keys:
                    keys.append(shown)
        if unknown:
            self.unknown.append((where, sorted(unknown), sorted({k.split(".")[0] for k in rules})))
        for why, keys in not_applied.items():
            self.notes.append(f"{name}: {', '.join(keys)} not applied: {why}")
        if out.get("init_method") == "const":
            constant = flat.get("init_param.init_const", 1)
            out["init_method"] = {0: "zeros", 1: "ones"}.get(constant, "const")
            if out["init_method"] == "const":
                self.problems.append(f"{where}.init_param.init_const: fedsuite starts from zeros or ones only "
                                     f"(got {constant!r})")
        return out

    def table(self, role: str, index: int, common: Mapping[str, tuple[str, dict[str, Any]]],
              by_party: Mapping[tuple[str, int], dict[str, Any]]) -> str | None:
        """The fedsuite dataset name of one party's reader table, or None (with a problem) when it has none."""
        for params in (by_party.get((role, index), {}), by_party.get((role, -1), {}),
                       *(p for n, (k, p) in common.items() if k == "reader")):
            for name, values in params.items():
                if _kind_of(name) == "reader":
                    table = values.get("table") if isinstance(values, Mapping) else None
                    if isinstance(table, Mapping) and isinstance(table.get("name"), str):
                        qualified = f"{table.get('namespace')}.{table['name']}"
                        return self.datasets.get(qualified, self.datasets.get(table["name"], table["name"]))
        self.problems.append(f"{role} {index}: no reader table (component_parameters.role.{role}.{index}.reader_0."
                             "table.name names the party's data)")
        return None

    def party(self, fate_id: str, role: str) -> str:
        if fate_id not in self.parties and (fate_id, role) not in self.unmapped:
            self.unmapped.append((fate_id, role))
        return self.parties.get(fate_id, fate_id)

    def fail_if_any(self) -> None:
        problems = ([unknown_keys_message(self.unknown)] if self.unknown else []) + self.problems
        if self.unmapped:
            ids = [i for i, _ in self.unmapped]
            one = len(ids) == 1
            who = ", ".join(f"{i} ({role})" for i, role in self.unmapped)
            flags = " ".join(f"--party {i}=NAME" for i in ids)
            mapping = ", ".join(f'"{i}": NAME' for i in ids)
            problems.append(f"FATE {'party' if one else 'parties'} {who} {'has' if one else 'have'} no fedsuite "
                            f'party: pass {flags} or add "fedsuite": {{"parties": {{{mapping}}}}} to the conf')
        if problems:
            raise FateConfError("; ".join(problems))


def translate(conf: Mapping[str, Any], parties: Mapping[str, str]) -> Translation:
    """The fedsuite job of a FATE conf; ``parties`` maps FATE party ids to fedsuite ids (over the conf's own)."""
    reader = _Reader(conf, parties)
    if conf.get("dsl_version", 2) not in (1, 2):
        reader.problems.append(f"dsl_version: fedsuite reads FATE's DSL 1 and 2 confs (got {conf['dsl_version']!r})")
    roles = reader.role_ids()
    job_params = reader.job_parameters()
    common, by_party = reader.components()
    reader.merge_party_params(common, by_party)
    kinds = {kind: name for name, (kind, _) in common.items()}
    evaluations = [(f"component_parameters.common.{n}", p) for n, (k, p) in common.items() if k == "evaluation"]
    evaluations += [(f"{role} {i}: {n}", p) for (role, i), ps in by_party.items() for n, p in ps.items()
                    if _kind_of(n) == "evaluation" and isinstance(p, Mapping)]
    for where, params in evaluations:
        if str(params.get("eval_type", "binary")).lower() != "binary":
            reader.problems.append(f"{where}.eval_type: fedsuite's logistic regressions here are binary; "
                                   f"got {params['eval_type']!r}")
    for name, (kind, params) in common.items():
        if kind in ("data_transform", "evaluation"):
            if set(params) - {"eval_type", "need_run"}:
                reader.notes.append(f"{name}: {', '.join(sorted(set(params) - {'eval_type', 'need_run'}))} not applied: "
                                    + (_DATA_TRANSFORM_NOTE if kind == "data_transform" else
                                       "fedsuite reports AUC, KS, accuracy, precision and recall on the guest"))
    predict = str(job_params.get("job_type", "")).lower() == "predict" or (
        "hetero_lr" not in kinds and "homo_lr" not in kinds and "model_id" in job_params)
    name = str(reader.extension.get("name") or "")
    if predict:
        job = {"name": name or "fate-predict", "vertical_predict": _predict(reader, roles, job_params, common, by_party)}
    elif "hetero_lr" in kinds and "homo_lr" not in kinds:
        body = _hetero(reader, roles, job_params, common, by_party, kinds)
        job = {"name": name or f"fate-{kinds['hetero_lr']}", "vertical": body}
    elif "homo_lr" in kinds and "hetero_lr" not in kinds:
        job = {"name": name or f"fate-{kinds['homo_lr']}", "horizontal": _homo(reader, roles, common, by_party, kinds)}
    else:
        reader.problems.append(
            "the conf trains both hetero_lr and homo_lr: fedsuite runs one model per job" if "hetero_lr" in kinds
            else "fedsuite has no stand-alone intersection job: PSI runs as the first step of every vertical job "
                 "(its size is on the job); add a hetero_lr component" if "intersection" in kinds
            else "nothing to run: no hetero_lr or homo_lr component, and no job_parameters model_id to predict with")
        job = {}
    reader.fail_if_any()
    return Translation(job, reader.notes)


def _vertical_parties(reader: _Reader, roles: Mapping[str, list[str]], common: Mapping[str, tuple[str, dict[str, Any]]],
                      by_party: Mapping[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    if len(roles["guest"]) != 1 or not roles["host"]:
        reader.problems.append(f"role: a vertical job has one guest and at least one host (got guest "
                               f"{roles['guest']}, host {roles['host']})")
        return {}
    both = sorted(set(roles["guest"]) & set(roles["host"]))
    if both:
        reader.problems.append(f"FATE party {', '.join(both)} is both guest and host (as in FATE's one-machine "
                               "tests); a fedsuite party plays one role in a job")
    guest_dataset = reader.table("guest", 0, common, by_party)
    host_datasets = {reader.table("host", i, common, by_party) for i in range(len(roles["host"]))}
    if len(host_datasets) > 1:
        reader.problems.append(f"hosts read different tables ({', '.join(sorted(map(str, host_datasets)))}): a "
                               "fedsuite vertical job names one host dataset; map them to one name in "
                               "fedsuite.datasets")
    return {"guest": reader.party(roles["guest"][0], "guest"),
            "hosts": [reader.party(h, "host") for h in roles["host"]],
            "guest_dataset": guest_dataset, "host_dataset": next(iter(host_datasets))}


def _model_ref(job_params: Mapping[str, Any]) -> dict[str, str]:
    """FATE's model_id/model_version, kept when set (FATE Flow fills them in when they are empty)."""
    return {key: str(job_params[key]) for key in ("model_id", "model_version")
            if job_params.get(key) not in (None, "")}


def _predict(reader: _Reader, roles: Mapping[str, list[str]], job_params: Mapping[str, Any],
             common: Mapping[str, tuple[str, dict[str, Any]]],
             by_party: Mapping[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    body = {**_vertical_parties(reader, roles, common, by_party), **_model_ref(job_params)}
    if "model_id" not in body:
        reader.problems.append("job_parameters.common.model_id: a predict conf names the trained model (in fedsuite "
                               "the training job's id, unless its conf set model_id)")
    if common:
        reader.notes.append(f"predict: component parameters ({', '.join(common)}) are not used; the model has its own")
    return body


def _hetero(reader: _Reader, roles: Mapping[str, list[str]], job_params: Mapping[str, Any],
            common: Mapping[str, tuple[str, dict[str, Any]]], by_party: Mapping[tuple[str, int], dict[str, Any]],
            kinds: Mapping[str, str]) -> dict[str, Any]:
    lr_name = kinds["hetero_lr"]
    where = f"component_parameters.common.{lr_name}"
    given = reader.translate_params(lr_name, "hetero_lr", common[lr_name][1], where)
    params = {**_FATE_HETERO_DEFAULTS, **given}
    fedsuite_defaults = HeteroLRParams()
    changed = [f"{key} {value}" for key, value in _FATE_HETERO_DEFAULTS.items()
               if key not in given and key != "key_length" and getattr(fedsuite_defaults, key) != value]
    if changed:
        reader.notes.append(f"{lr_name} leaves {', '.join(c.split()[0] for c in changed)} unset: this job keeps "
                            f"FATE's defaults ({', '.join(changed)}), not fedsuite's")
    if roles["arbiter"]:
        reader.notes.append(f"FATE's arbiter {', '.join(roles['arbiter'])} is not mapped: fedsuite's arbiter is the "
                            "one the coordinator is configured with")
    unset_keys = [] if "key_length" in given else [f"{lr_name}.encrypt_param.key_length"]
    if "intersection" in kinds:
        psi_name = kinds["intersection"]
        psi = reader.translate_params(psi_name, "intersection", common[psi_name][1],
                                      f"component_parameters.common.{psi_name}")
        method = psi.pop("intersect_method", "rsa")
        if method != "rsa":
            reader.notes.append(f"{psi_name}: intersect_method {method} becomes fedsuite's RSA blind-signature PSI "
                                "(the same intersection) with its default 2048-bit key")
        elif "psi_key_length" not in psi:
            psi["psi_key_length"] = _FATE_PSI_KEY_LENGTH
            unset_keys.append(f"{psi_name}.rsa_params.key_length")
        params.update(psi)
    if unset_keys:
        reader.notes.append(_kept_1024(unset_keys))
    try:
        HeteroLRParams.from_dict(params)
    except ValueError as err:
        key, _, rest = str(err).partition(":")
        reader.problems.append(f"{where}.{_FATE_NAMES.get(key, key)}:{rest}")
    return {**_vertical_parties(reader, roles, common, by_party), **_model_ref(job_params), "params": params}


def _homo(reader: _Reader, roles: Mapping[str, list[str]], common: Mapping[str, tuple[str, dict[str, Any]]],
          by_party: Mapping[tuple[str, int], dict[str, Any]], kinds: Mapping[str, str]) -> dict[str, Any]:
    lr_name = kinds["homo_lr"]
    where = f"component_parameters.common.{lr_name}"
    given = reader.translate_params(lr_name, "homo_lr", common[lr_name][1], where)
    p = {**_FATE_HOMO_DEFAULTS, **given}
    unset = [f"{k} {v}" for k, v in _FATE_HOMO_DEFAULTS.items() if k not in given and k in _HOMO_DIFFERENT]
    if unset:
        reader.notes.append(f"{lr_name} leaves {', '.join(u.split()[0] for u in unset)} unset: this job keeps "
                            f"FATE's defaults ({', '.join(unset)})")
    if "optimizer" not in _flatten(common[lr_name][1]):
        reader.notes.append(f"{lr_name}: FATE's default optimizer rmsprop is not available: fedsuite's horizontal "
                            "jobs train with plain SGD")
    for key in ("max_iter", "aggregate_iters", "batch_size"):
        if isinstance(p[key], bool) or not isinstance(p[key], int):
            reader.problems.append(f"{where}.{key}: expected an integer, got {p[key]!r}")
            return {}
    if p["aggregate_iters"] < 1 or p["max_iter"] < 1:
        reader.problems.append(f"{where}: max_iter and aggregate_iters must be >= 1")
        return {}
    parties = roles["guest"] + roles["host"]
    datasets = {reader.table(role, i, common, by_party) for role in ("guest", "host") for i in range(len(roles[role]))}
    if len(datasets) > 1:
        reader.problems.append(f"parties read different tables ({', '.join(sorted(map(str, datasets)))}): a fedsuite "
                               "horizontal job trains on one dataset name every party holds; map them to one name in "
                               "fedsuite.datasets")
    body: dict[str, Any] = {
        "dataset": next(iter(datasets), None), "model": {"type": "logistic_regression"},
        "rounds": max(p["max_iter"] // p["aggregate_iters"], 1), "local_epochs": p["aggregate_iters"],
        "batch_size": max(p["batch_size"], 0), "learning_rate": p["learning_rate"],
        "penalty": str(p["penalty"]).lower(), "alpha": p["alpha"], "min_parties": len(parties), "standardize": False,
    }
    reader.notes.append(f"FATE's {len(parties)} parties ({', '.join(parties)}) become min_parties {len(parties)}: "
                        f"fedsuite samples among every online party holding {body['dataset']}; features are used as "
                        "they are, as in FATE (standardize: false)")
    if p.get("secure_aggregation") not in (None, "none"):
        body["secure_aggregation"] = p["secure_aggregation"]
        body["key_bits"] = p.get("key_bits", 1024)
        if "key_bits" not in p:
            reader.notes.append(_kept_1024([f"{lr_name}.encrypt_param.key_length"]))
    return body


def _kept_1024(keys: list[str]) -> str:
    return (f"{' and '.join(keys)} {'is' if len(keys) == 1 else 'are'} unset, which meant 1024 bits in FATE (up to "
            f"1.11.3): this job keeps 1024; {_SECURITY_NOTE}; set {'it' if len(keys) == 1 else 'them'} to 2048 to "
            "follow it")
