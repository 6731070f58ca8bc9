"""Read template.yaml the way CloudFormation and SAM would, for a stack that runs locally.

Three pieces:

- ``load_template`` parses YAML that uses CloudFormation's short-form tags (``!Ref``, ``!Sub``,
  ``!GetAtt`` ...) into the long form (``{"Ref": ...}``, ``{"Fn::Sub": ...}``), the same shape a
  JSON template has.
- ``Resolver`` evaluates intrinsic functions against a ``LocalContext`` (stack ``jobbridge``,
  region ``us-east-1``, moto's default account ``123456789012``), so a property like
  ``!GetAtt PublicLambdaDLQ.Arn`` becomes the ARN moto will give that queue.
- ``Template.function_spec`` merges SAM ``Globals`` into a function and resolves what running
  its handler needs: code directory, handler, environment, layer directories, timeout.

Example::

    template = load_template()                       # template.yaml at the project root
    spec = template.function_spec("bridge")          # or "BridgeFunction"
    spec.environment["JOBBRIDGE_TABLE_NAME"]         # 'jobbridge-jobs'

References: intrinsic functions
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference.html ;
what Ref / Fn::GetAtt return per resource type is listed on each resource's page (e.g.
AWS::SQS::Queue: Ref is the queue URL). SAM Globals merge rules:
https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-specification-template-anatomy-globals.html
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from . import paths

LOCAL_STACK_NAME = "jobbridge"
LOCAL_REGION = "us-east-1"
# moto's default account (moto.core.DEFAULT_ACCOUNT_ID); ARNs moto returns carry it.
LOCAL_ACCOUNT_ID = "123456789012"
PARTITION = "aws"

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")

# Lambda's defaults when a function does not say (AWS::Lambda::Function docs).
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128


class TemplateError(Exception):
    """The template cannot be read or an intrinsic cannot be resolved locally."""


# --------------------------------------------------------------------------------------------
# Loading: short-form tags -> long form
# --------------------------------------------------------------------------------------------

# Every short-form tag CloudFormation documents, with the long-form key it stands for.
_SHORT_FORM_TAGS = {
    "!Ref": "Ref",
    "!Condition": "Condition",
    "!Base64": "Fn::Base64",
    "!Cidr": "Fn::Cidr",
    "!FindInMap": "Fn::FindInMap",
    "!GetAtt": "Fn::GetAtt",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Join": "Fn::Join",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!Sub": "Fn::Sub",
    "!Transform": "Fn::Transform",
    "!And": "Fn::And",
    "!Equals": "Fn::Equals",
    "!If": "Fn::If",
    "!Not": "Fn::Not",
    "!Or": "Fn::Or",
    "!ToJsonString": "Fn::ToJsonString",
    "!Length": "Fn::Length",
}


class CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that turns ``!Tag value`` into ``{"Fn::Tag": value}``."""


def _construct_intrinsic(loader: CloudFormationLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = _SHORT_FORM_TAGS["!" + tag_suffix]
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        # "!GetAtt Res.Attr" is the one short form whose scalar means a list: split at the first
        # dot only, since attribute names may contain dots (e.g. Endpoint.Address).
        if key == "Fn::GetAtt":
            logical_id, _, attribute = str(value).partition(".")
            value = [logical_id, attribute]
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {key: value}


for _tag in _SHORT_FORM_TAGS:
    CloudFormationLoader.add_constructor(
        _tag, lambda loader, node, _suffix=_tag[1:]: _construct_intrinsic(loader, _suffix, node)
    )


def parse_template(text: str) -> dict[str, Any]:
    document = yaml.load(text, Loader=CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError("not a CloudFormation template: no Resources section")
    return document


def load_template(path: str | Path | None = None) -> "Template":
    """Load template.yaml (default: the one at the project root)."""
    template_file = Path(path) if path is not None else paths.template_path()
    if not template_file.is_file():
        raise TemplateError(f"template not found: {template_file}")
    return Template(parse_template(template_file.read_text()), base_dir=template_file.parent)


# --------------------------------------------------------------------------------------------
# Resolving intrinsics against a local context
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalContext:
    """What CloudFormation would know at deploy time, for the local stack.

    ``endpoint_url`` is where queue URLs point (moto answers on the URL you reached it by).
    ``attributes`` holds facts only the emulator knows once resources exist, keyed by logical
    id, e.g. ``{"JobsTable": {"StreamArn": "arn:...stream/2024-..."}}``; ``"Ref"`` overrides Ref.
    """

    stack_name: str = LOCAL_STACK_NAME
    region: str = LOCAL_REGION
    account_id: str = LOCAL_ACCOUNT_ID
    parameters: Mapping[str, Any] = field(default_factory=dict)
    endpoint_url: str | None = None
    attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class _NoValue:
    """``Ref: AWS::NoValue``: the property is removed, as if it were never written."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")

# The property that names a resource, per type; when absent CloudFormation generates a name.
_NAME_PROPERTY = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Events::EventBus": "Name",
    "AWS::Events::Rule": "Name",
    "AWS::IAM::Role": "RoleName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::Batch::JobQueue": "JobQueueName",
    "AWS::Batch::JobDefinition": "JobDefinitionName",
    "AWS::Batch::ComputeEnvironment": "ComputeEnvironmentName",
    "AWS::SSM::Parameter": "Name",
    "AWS::SecretsManager::Secret": "Name",
}


class Resolver:
    """Evaluates intrinsic functions of one template in one ``LocalContext``."""

    def __init__(self, template: "Template", context: LocalContext | None = None):
        self.template = template
        self.context = context or LocalContext()
        self._conditions: dict[str, bool] = {}

    # -- public -------------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Return ``value`` with every intrinsic evaluated and ``AWS::NoValue`` removed."""
        if isinstance(value, dict):
            if len(value) == 1:
                (key, argument), = value.items()
                if key == "Ref" or key.startswith("Fn::"):
                    return self._intrinsic(key, argument)
            resolved = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        return value

    def condition(self, name: str) -> bool:
        """The value of a named entry of the template's Conditions section."""
        if name not in self._conditions:
            conditions = self.template.document.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name!r}")
            self._conditions[name] = self._truth(conditions[name])
        return self._conditions[name]

    def resource_enabled(self, logical_id: str) -> bool:
        """False when the resource's ``Condition`` is false: CloudFormation would not create it."""
        condition = self.template.resource(logical_id).get("Condition")
        return True if condition is None else self.condition(condition)

    def physical_name(self, logical_id: str) -> str:
        """The name the resource gets: its name property, or a stable generated one.

        CloudFormation generates ``{stack}-{LogicalId}-{RANDOM}``; locally the random suffix is
        dropped so names stay the same across restarts.
        """
        resource = self.template.resource(logical_id)
        rtype = resource.get("Type", "")
        properties = resource.get("Properties") or {}
        name_property = _NAME_PROPERTY.get(rtype)
        if name_property and properties.get(name_property) is not None:
            return str(self.resolve(properties[name_property]))
        name = f"{self.context.stack_name}-{logical_id}"
        if rtype == "AWS::S3::Bucket":
            name = name.lower()  # bucket names are lower case
        if rtype == "AWS::SQS::Queue" and _truthy(self.resolve(properties.get("FifoQueue", False))):
            name += ".fifo"  # a FIFO queue's name must end in .fifo
        return name

    def ref(self, name: str) -> Any:
        pseudo = self._pseudo_parameter(name)
        if pseudo is not None:
            return pseudo
        parameters = self.template.document.get("Parameters") or {}
        if name in parameters:
            return self._parameter(name, parameters[name])
        override = self.context.attributes.get(name, {}).get("Ref")
        if override is not None:
            return override
        resource = self.template.resource(name)
        rtype = resource.get("Type", "")
        physical = self.physical_name(name)
        if rtype == "AWS::SQS::Queue":
            return self._queue_url(physical)
        if rtype in (
            "AWS::SNS::Topic",
            "AWS::Serverless::LayerVersion",
            "AWS::Lambda::LayerVersion",
            "AWS::Batch::JobQueue",
            "AWS::Batch::JobDefinition",
            "AWS::Batch::ComputeEnvironment",
            "AWS::SecretsManager::Secret",
        ):
            return self.get_att(name, "Arn")  # these types' Ref is their ARN
        return physical

    def get_att(self, logical_id: str, attribute: str) -> Any:
        known = self.context.attributes.get(logical_id, {})
        if attribute in known:
            return known[attribute]
        resource = self.template.resource(logical_id)
        rtype = resource.get("Type", "")
        name = self.physical_name(logical_id)
        region, account = self.context.region, self.context.account_id
        if rtype in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            arn = f"arn:{PARTITION}:dynamodb:{region}:{account}:table/{name}"
            if attribute == "Arn":
                return arn
            if attribute == "StreamArn":
                # The stream label is a creation timestamp only DynamoDB (moto) knows.
                raise TemplateError(
                    f"{logical_id}.StreamArn is known only once the table exists: pass "
                    "LocalContext(attributes=LocalResources.attributes())"
                )
        elif rtype == "AWS::SQS::Queue":
            values = {
                "Arn": f"arn:{PARTITION}:sqs:{region}:{account}:{name}",
                "QueueName": name,
                "QueueUrl": self._queue_url(name),
            }
            if attribute in values:
                return values[attribute]
        else:
            arn_formats = {
                "AWS::S3::Bucket": f"arn:{PARTITION}:s3:::{name}",
                "AWS::Serverless::Function": f"arn:{PARTITION}:lambda:{region}:{account}:function:{name}",
                "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{region}:{account}:function:{name}",
                "AWS::Serverless::LayerVersion": f"arn:{PARTITION}:lambda:{region}:{account}:layer:{name}:1",
                "AWS::Lambda::LayerVersion": f"arn:{PARTITION}:lambda:{region}:{account}:layer:{name}:1",
                "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{region}:{account}:{name}",
                "AWS::Events::EventBus": f"arn:{PARTITION}:events:{region}:{account}:event-bus/{name}",
                "AWS::Events::Rule": f"arn:{PARTITION}:events:{region}:{account}:rule/{name}",
                "AWS::IAM::Role": f"arn:{PARTITION}:iam::{account}:role/{name}",
                "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{region}:{account}:log-group:{name}:*",
                "AWS::Batch::JobQueue": f"arn:{PARTITION}:batch:{region}:{account}:job-queue/{name}",
                "AWS::Batch::JobDefinition": f"arn:{PARTITION}:batch:{region}:{account}:job-definition/{name}:1",
                "AWS::Batch::ComputeEnvironment": (
                    f"arn:{PARTITION}:batch:{region}:{account}:compute-environment/{name}"
                ),
                "AWS::SecretsManager::Secret": f"arn:{PARTITION}:secretsmanager:{region}:{account}:secret:{name}",
                "AWS::SSM::Parameter": f"arn:{PARTITION}:ssm:{region}:{account}:parameter/{name}",
            }
            if attribute in ("Arn", "TopicArn") and rtype in arn_formats:
                return arn_formats[rtype]
            if attribute in ("Name", "TopicName"):
                return name
            if attribute == "DomainName" and rtype == "AWS::S3::Bucket":
                return f"{name}.s3.amazonaws.com"
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} ({rtype}) is not supported locally")

    # -- intrinsics ---------------------------------------------------------------------------

    def _intrinsic(self, key: str, argument: Any) -> Any:
        if key == "Ref":
            return self.ref(self._as_str(argument, key))
        if key == "Fn::GetAtt":
            if isinstance(argument, str):
                logical_id, _, attribute = argument.partition(".")
            else:
                logical_id, attribute = argument[0], self.resolve(argument[1])
            return self.get_att(logical_id, attribute)
        if key == "Fn::Sub":
            return self._sub(argument)
        if key == "Fn::Join":
            delimiter, items = argument
            values = self.resolve(items)
            if not isinstance(values, list):
                raise TemplateError(f"Fn::Join needs a list, got {values!r}")
            return str(delimiter).join(_scalar_str(v) for v in values)
        if key == "Fn::Select":
            index, items = argument
            values = self.resolve(items)
            return values[int(self.resolve(index))]
        if key == "Fn::Split":
            delimiter, source = argument
            return _scalar_str(self.resolve(source)).split(delimiter)
        if key == "Fn::If":
            name, if_true, if_false = argument
            return self.resolve(if_true if self.condition(name) else if_false)
        if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
            return self._truth({key: argument})
        if key == "Fn::FindInMap":
            return self._find_in_map(argument)
        if key == "Fn::Base64":
            return base64.b64encode(_scalar_str(self.resolve(argument)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{self.context.region}{zone}" for zone in "abc"]
        if key == "Fn::ToJsonString":
            return json.dumps(self.resolve(argument), separators=(",", ":"))
        if key == "Fn::Length":
            return len(self.resolve(argument))
        # Fn::ImportValue needs another stack; Fn::Cidr, Fn::Transform need services we lack.
        raise TemplateError(f"{key} is not supported by the local stack")

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], argument[1] if len(argument) > 1 else {}
        else:
            text, variables = argument, {}
        values = {name: self.resolve(value) for name, value in (variables or {}).items()}

        def substitute(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"  # ${!Literal} writes ${Literal}
            expression = expression.strip()
            if expression in values:
                return _scalar_str(values[expression])
            if "." in expression and not expression.startswith("AWS::"):
                logical_id, _, attribute = expression.partition(".")
                return _scalar_str(self.get_att(logical_id, attribute))
            return _scalar_str(self.ref(expression))

        return _SUB_VARIABLE.sub(substitute, text)

    def _find_in_map(self, argument: list[Any]) -> Any:
        map_name, top, second = (self.resolve(a) for a in argument[:3])
        mappings = self.template.document.get("Mappings") or {}
        try:
            return self.resolve(mappings[map_name][top][second])
        except KeyError:
            # AWS::LanguageExtensions allows a 4th element {"DefaultValue": ...}.
            if len(argument) > 3 and isinstance(argument[3], dict) and "DefaultValue" in argument[3]:
                return self.resolve(argument[3]["DefaultValue"])
            raise TemplateError(f"Fn::FindInMap {map_name}/{top}/{second} not found") from None

    def _truth(self, expression: Any) -> bool:
        """Evaluate a condition expression (Fn::Equals/Not/And/Or or {"Condition": name})."""
        if isinstance(expression, dict) and len(expression) == 1:
            (key, argument), = expression.items()
            if key == "Condition":
                return self.condition(argument)
            if key == "Fn::Equals":
                left, right = (self.resolve(a) for a in argument)
                return _scalar_str(left) == _scalar_str(right)
            if key == "Fn::Not":
                return not self._truth(argument[0])
            if key == "Fn::And":
                return all(self._truth(a) for a in argument)
            if key == "Fn::Or":
                return any(self._truth(a) for a in argument)
        value = self.resolve(expression)
        if isinstance(value, bool):
            return value
        raise TemplateError(f"not a condition: {expression!r}")

    # -- parameters ---------------------------------------------------------------------------

    def _pseudo_parameter(self, name: str) -> Any:
        ctx = self.context
        return {
            "AWS::StackName": ctx.stack_name,
            "AWS::Region": ctx.region,
            "AWS::AccountId": ctx.account_id,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": (
                f"arn:{PARTITION}:cloudformation:{ctx.region}:{ctx.account_id}:stack/{ctx.stack_name}/local"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }.get(name)

    def _parameter(self, name: str, declaration: Mapping[str, Any]) -> Any:
        if name in self.context.parameters:
            value = self.context.parameters[name]
        elif "Default" in declaration:
            value = declaration["Default"]
        else:
            raise TemplateError(f"parameter {name!r} has no Default: pass it in LocalContext.parameters")
        ptype = str(declaration.get("Type", "String"))
        if isinstance(value, str) and (ptype == "CommaDelimitedList" or ptype.startswith("List<")):
            return [part.strip() for part in value.split(",")] if value else []
        return value

    def _queue_url(self, queue_name: str) -> str:
        # moto builds queue URLs from the host it was reached on (moto/sqs/models.py Queue.url),
        # so locally the URL is the endpoint's; in AWS it is the regional SQS host.
        base = self.context.endpoint_url or f"https://sqs.{self.context.region}.amazonaws.com"
        return f"{base.rstrip('/')}/{self.context.account_id}/{queue_name}"

    @staticmethod
    def _as_str(value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise TemplateError(f"{key} takes a name, got {value!r}")
        return value


def _scalar_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError(f"expected a scalar, got {value!r}")
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


# --------------------------------------------------------------------------------------------
# The template: resources, dependencies, functions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """What running one function's handler locally needs, resolved from the template."""

    logical_id: str
    code_dir: Path
    handler_module: str
    handler_attr: str
    environment: dict[str, str]
    layer_dirs: list[Path]
    function_name: str = ""
    timeout: int = DEFAULT_TIMEOUT_SECONDS
    memory_size: int = DEFAULT_MEMORY_MB
    runtime: str | None = None
    # Layers given as ARNs (not built from this template); their packages must come from the
    # local environment instead (e.g. the Powertools layer -> aws-lambda-powertools from pip).
    external_layers: list[str] = field(default_factory=list)

    @property
    def handler_file(self) -> Path:
        return self.code_dir.joinpath(*self.handler_module.split(".")).with_suffix(".py")


@dataclass(frozen=True)
class EventSource:
    """One entry of a SAM function's ``Events`` (a trigger), with resolved properties."""

    function_logical_id: str
    name: str
    type: str
    properties: dict[str, Any]


class Template:
    """A parsed template plus the operations the local stack needs on it."""

    def __init__(self, document: dict[str, Any], base_dir: Path | str = "."):
        self.document = document
        self.base_dir = Path(base_dir).resolve()

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.document.get("Resources") or {}

    def resource(self, logical_id: str) -> dict[str, Any]:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise TemplateError(f"no resource {logical_id!r} in the template") from None

    def resources_of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {lid: res for lid, res in self.resources.items() if res.get("Type") in types}

    def resolver(self, context: LocalContext | None = None) -> Resolver:
        return Resolver(self, context)

    # -- dependencies -------------------------------------------------------------------------

    def dependencies(self, logical_id: str) -> set[str]:
        """Resources this one refers to (Ref, Fn::GetAtt, ${...} in Fn::Sub, DependsOn)."""
        resource = self.resource(logical_id)
        found: set[str] = set()
        depends_on = resource.get("DependsOn") or []
        found.update([depends_on] if isinstance(depends_on, str) else depends_on)
        _collect_references(resource.get("Properties") or {}, found)
        return {name for name in found if name in self.resources and name != logical_id}

    def creation_order(self, logical_ids: Iterable[str]) -> list[str]:
        """``logical_ids`` sorted so each comes after the ones it depends on (e.g. DLQs first)."""
        wanted = list(logical_ids)
        wanted_set = set(wanted)
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(lid: str) -> None:
            if lid in ordered:
                return
            if lid in visiting:
                raise TemplateError(f"circular dependency through {lid}")
            visiting.add(lid)
            for dep in sorted(self.dependencies(lid) & wanted_set):
                visit(dep)
            visiting.discard(lid)
            ordered.append(lid)

        for lid in wanted:
            visit(lid)
        return ordered

    # -- functions ----------------------------------------------------------------------------

    def function_logical_id(self, name: str) -> str:
        """Accept ``BridgeFunction``, ``bridge``, ``batch_submit`` or ``batch-submit``."""
        functions = self.resources_of_type(*FUNCTION_TYPES)
        if name in functions:
            return name
        camel = "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-\s]+", name) if part)
        for candidate in (camel, camel + "Function"):
            for logical_id in functions:
                if logical_id.lower() == candidate.lower():
                    return logical_id
        raise TemplateError(f"no function {name!r} in the template (functions: {', '.join(sorted(functions))})")

    def function_properties(self, logical_id: str) -> dict[str, Any]:
        """A function's Properties with ``Globals.Function`` merged in, still unresolved."""
        resource = self.resource(logical_id)
        properties = resource.get("Properties") or {}
        if resource.get("Type") != "AWS::Serverless::Function":
            return dict(properties)  # Globals apply to SAM resources only
        globals_ = (self.document.get("Globals") or {}).get("Function") or {}
        return _merge_globals(globals_, properties)

    def function_spec(self, name: str, context: LocalContext | None = None) -> FunctionSpec:
        logical_id = self.function_logical_id(name)
        resolver = self.resolver(context)
        properties = self.function_properties(logical_id)

        code_uri = resolver.resolve(properties.get("CodeUri", "."))
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri {code_uri!r} is not a local directory")
        handler = resolver.resolve(properties.get("Handler"))
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"{logical_id}: Handler must look like module.function, got {handler!r}")
        handler_module, _, handler_attr = handler.rpartition(".")

        variables = ((resolver.resolve(properties.get("Environment")) or {}).get("Variables")) or {}
        # Lambda environment values are strings; YAML may have typed them as numbers or booleans.
        environment = {str(k): _scalar_str(v) for k, v in variables.items()}

        layer_dirs: list[Path] = []
        external: list[str] = []
        for entry in properties.get("Layers") or []:
            layer_id = entry.get("Ref") if isinstance(entry, dict) and set(entry) == {"Ref"} else None
            if layer_id in self.resources_of_type(*LAYER_TYPES):
                layer_dirs.append(self._layer_dir(layer_id, resolver))
            else:
                resolved = resolver.resolve(entry)
                if resolved is not NO_VALUE:
                    external.append(str(resolved))

        return FunctionSpec(
            logical_id=logical_id,
            code_dir=(self.base_dir / code_uri).resolve(),
            handler_module=handler_module,
            handler_attr=handler_attr,
            environment=environment,
            layer_dirs=layer_dirs,
            function_name=resolver.physical_name(logical_id),
            timeout=int(resolver.resolve(properties.get("Timeout", DEFAULT_TIMEOUT_SECONDS))),
            memory_size=int(resolver.resolve(properties.get("MemorySize", DEFAULT_MEMORY_MB))),
            runtime=resolver.resolve(properties.get("Runtime")),
            external_layers=external,
        )

    def event_sources(
        self, name: str, event_type: str | None = None, context: LocalContext | None = None
    ) -> list[EventSource]:
        """The function's SAM ``Events`` (optionally of one Type, e.g. ``DynamoDB``), resolved."""
        logical_id = self.function_logical_id(name)
        resolver = self.resolver(context)
        events = self.function_properties(logical_id).get("Events") or {}
        return [
            EventSource(logical_id, event_name, event["Type"], resolver.resolve(event.get("Properties") or {}))
            for event_name, event in events.items()
            if event_type is None or event.get("Type") == event_type
        ]

    def _layer_dir(self, layer_id: str, resolver: Resolver) -> Path:
        properties = self.resource(layer_id).get("Properties") or {}
        content = resolver.resolve(properties.get("ContentUri", properties.get("Content")))
        if not isinstance(content, str):
            raise TemplateError(f"{layer_id}: ContentUri {content!r} is not a local directory")
        return (self.base_dir / content).resolve()


def function_spec(
    name: str, context: LocalContext | None = None, template_path: str | Path | None = None
) -> FunctionSpec:
    """``FunctionSpec`` of ``name`` (``BridgeFunction`` or ``bridge``) in template.yaml."""
    return load_template(template_path).function_spec(name, context)


def _collect_references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        if len(value) == 1:
            (key, argument), = value.items()
            if key == "Ref" and isinstance(argument, str):
                found.add(argument)
            elif key == "Fn::GetAtt":
                found.add(argument.partition(".")[0] if isinstance(argument, str) else argument[0])
            elif key == "Fn::Sub":
                text = argument[0] if isinstance(argument, list) else argument
                for expression in _SUB_VARIABLE.findall(str(text)):
                    if not expression.startswith("!"):
                        found.add(expression.strip().partition(".")[0])
        for item in value.values():
            _collect_references(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_references(item, found)


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = str(next(iter(value)))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals rules: maps merge (the function wins on a clash), lists concatenate
    (Globals first), anything else the function's value wins. An intrinsic is a value, not a map."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        if _is_intrinsic(global_value) or _is_intrinsic(local_value):
            return local_value
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = _merge_globals(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return [*global_value, *local_value]
    return local_value
