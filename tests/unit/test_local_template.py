"""jobbridge_local.template: short-form tags, intrinsic functions, SAM Globals, function specs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobbridge_local import paths
from jobbridge_local.template import (
    NO_VALUE,
    LocalContext,
    Template,
    TemplateError,
    function_spec,
    load_template,
    parse_template,
)

ENDPOINT = "http://127.0.0.1:4566"

SMALL_TEMPLATE = textwrap.dedent(
    """
    Parameters:
      Stage: { Type: String, Default: dev }
      Retries: { Type: Number, Default: 5 }
      Zones: { Type: CommaDelimitedList, Default: "a,b" }
      NoDefault: { Type: String }
    Mappings:
      Sizes:
        dev: { memory: 256 }
        prod: { memory: 1024 }
    Conditions:
      IsProd: !Equals [!Ref Stage, prod]
      IsNotProd: !Not [!Condition IsProd]
      ProdAndMany: !And [!Condition IsProd, !Equals [!Ref Retries, 5]]
    Globals:
      Function:
        Runtime: python3.12
        Timeout: 30
        Layers: [!Ref SharedLayer]
        Environment:
          Variables:
            TABLE: !Ref Table
            SHARED: from-globals
    Resources:
      Table:
        Type: AWS::DynamoDB::Table
        Properties:
          KeySchema: [{ AttributeName: pk, KeyType: HASH }]
      NamedTable:
        Type: AWS::DynamoDB::Table
        Properties:
          TableName: !Sub "${AWS::StackName}-named"
      Dlq:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Sub ${AWS::StackName}-dlq
      Queue:
        Type: AWS::SQS::Queue
        Properties:
          QueueName: !Join ["-", [!Ref "AWS::StackName", work]]
          RedrivePolicy:
            deadLetterTargetArn: !GetAtt Dlq.Arn
            maxReceiveCount: !Ref Retries
          DelaySeconds: !If [IsProd, 5, !Ref "AWS::NoValue"]
      ProdOnly:
        Type: AWS::SQS::Queue
        Condition: IsProd
      SharedLayer:
        Type: AWS::Serverless::LayerVersion
        Properties:
          ContentUri: layers/shared
      WorkerFunction:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/worker
          Handler: app.handler
          Timeout: 900
          Layers: [arn:aws:lambda:us-east-1:017000801446:layer:Powertools:1]
          Environment:
            Variables:
              SHARED: from-function
              QUEUE: !Ref Queue
              MEMORY: !FindInMap [Sizes, !Ref Stage, memory]
              ENABLED: true
          Events:
            Work:
              Type: SQS
              Properties:
                Queue: !GetAtt Queue.Arn
                BatchSize: 10
    """
)


@pytest.fixture
def small() -> Template:
    return Template(parse_template(SMALL_TEMPLATE), base_dir="/project")


# -- short-form tags ------------------------------------------------------------------------------


def test_short_form_tags_become_the_long_form(small: Template) -> None:
    queue = small.resources["Queue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["Dlq", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "Retries"}
    assert queue["QueueName"] == {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "work"]]}
    assert queue["DelaySeconds"] == {"Fn::If": ["IsProd", 5, {"Ref": "AWS::NoValue"}]}
    conditions = small.document["Conditions"]
    assert conditions["IsProd"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    assert conditions["IsNotProd"] == {"Fn::Not": [{"Condition": "IsProd"}]}
    assert small.resources["NamedTable"]["Properties"]["TableName"] == {"Fn::Sub": "${AWS::StackName}-named"}


def test_getatt_scalar_splits_at_the_first_dot_only() -> None:
    document = parse_template("Resources: {}\nOutputs: {A: !GetAtt Db.Endpoint.Address}\n")
    assert document["Outputs"]["A"] == {"Fn::GetAtt": ["Db", "Endpoint.Address"]}


def test_every_documented_tag_is_understood() -> None:
    tags = "Base64 Cidr FindInMap GetAtt GetAZs ImportValue Join Select Split Sub Transform And Equals If Not Or Ref Condition"
    body = "\n".join(f"  T{tag}: !{tag} [x, y]" for tag in tags.split())
    document = parse_template(f"Resources: {{}}\nOutputs:\n{body}\n")
    for tag in tags.split():
        (key,) = document["Outputs"][f"T{tag}"]
        assert key in (tag, f"Fn::{tag}")


def test_a_document_without_resources_is_rejected() -> None:
    with pytest.raises(TemplateError, match="Resources"):
        parse_template("just: yaml\n")


# -- intrinsic functions --------------------------------------------------------------------------


def test_ref_gives_names_for_tables_and_urls_for_queues(small: Template) -> None:
    resolver = small.resolver(LocalContext(endpoint_url=ENDPOINT))
    assert resolver.resolve({"Ref": "Table"}) == "jobbridge-Table"  # generated, stable
    assert resolver.resolve({"Ref": "NamedTable"}) == "jobbridge-named"
    assert resolver.resolve({"Ref": "Queue"}) == f"{ENDPOINT}/123456789012/jobbridge-work"


def test_queue_url_without_an_endpoint_is_the_regional_sqs_url(small: Template) -> None:
    assert small.resolver().resolve({"Ref": "Dlq"}) == "https://sqs.us-east-1.amazonaws.com/123456789012/jobbridge-dlq"


def test_getatt_of_queues_and_tables(small: Template) -> None:
    resolver = small.resolver(LocalContext(endpoint_url=ENDPOINT))
    assert resolver.resolve({"Fn::GetAtt": ["Dlq", "Arn"]}) == "arn:aws:sqs:us-east-1:123456789012:jobbridge-dlq"
    assert resolver.resolve({"Fn::GetAtt": ["Dlq", "QueueName"]}) == "jobbridge-dlq"
    assert resolver.resolve({"Fn::GetAtt": "Dlq.QueueUrl"}) == f"{ENDPOINT}/123456789012/jobbridge-dlq"
    assert resolver.resolve({"Fn::GetAtt": ["Table", "Arn"]}) == (
        "arn:aws:dynamodb:us-east-1:123456789012:table/jobbridge-Table"
    )


def test_stream_arn_comes_from_the_emulator_not_a_guess(small: Template) -> None:
    with pytest.raises(TemplateError, match="StreamArn"):
        small.resolver().resolve({"Fn::GetAtt": ["Table", "StreamArn"]})
    known = LocalContext(attributes={"Table": {"StreamArn": "arn:aws:dynamodb:...:table/t/stream/1"}})
    assert small.resolver(known).resolve({"Fn::GetAtt": ["Table", "StreamArn"]}) == "arn:aws:dynamodb:...:table/t/stream/1"


def test_sub_resolves_pseudo_parameters_attributes_variables_and_literals(small: Template) -> None:
    resolver = small.resolver(LocalContext(stack_name="s1", region="eu-west-1", account_id="111122223333"))
    text = "${AWS::StackName}/${AWS::Region}/${AWS::AccountId}/${Dlq.Arn}/${Table}/${Stage}/${!Literal}/${Extra}"
    assert resolver.resolve({"Fn::Sub": [text, {"Extra": {"Ref": "Retries"}}]}) == (
        "s1/eu-west-1/111122223333/arn:aws:sqs:eu-west-1:111122223333:s1-dlq/s1-Table/dev/${Literal}/5"
    )


def test_join_select_split_findinmap_base64(small: Template) -> None:
    resolver = small.resolver()
    assert resolver.resolve({"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]}) == "b"
    assert resolver.resolve({"Fn::Join": ["", ["x", {"Ref": "Retries"}, True]]}) == "x5true"
    assert resolver.resolve({"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "memory"]}) == 256
    assert resolver.resolve({"Fn::Base64": "hi"}) == "aGk="
    assert resolver.resolve({"Ref": "Zones"}) == ["a", "b"]


def test_conditions_if_and_novalue(small: Template) -> None:
    dev = small.resolver()
    assert dev.condition("IsProd") is False
    assert dev.condition("IsNotProd") is True
    assert "DelaySeconds" not in dev.resolve(small.resources["Queue"]["Properties"])  # AWS::NoValue drops it
    assert dev.resource_enabled("ProdOnly") is False

    prod = small.resolver(LocalContext(parameters={"Stage": "prod"}))
    assert prod.condition("ProdAndMany") is True
    assert prod.resolve(small.resources["Queue"]["Properties"])["DelaySeconds"] == 5
    assert prod.resource_enabled("ProdOnly") is True


def test_novalue_is_removed_from_lists(small: Template) -> None:
    assert small.resolver().resolve(["a", {"Ref": "AWS::NoValue"}, "b"]) == ["a", "b"]
    assert small.resolver().resolve({"Ref": "AWS::NoValue"}) is NO_VALUE


def test_parameter_without_default_needs_an_override(small: Template) -> None:
    with pytest.raises(TemplateError, match="NoDefault"):
        small.resolver().resolve({"Ref": "NoDefault"})
    assert small.resolver(LocalContext(parameters={"NoDefault": "given"})).resolve({"Ref": "NoDefault"}) == "given"


def test_unknown_names_and_unsupported_functions_fail_loudly(small: Template) -> None:
    with pytest.raises(TemplateError, match="Missing"):
        small.resolver().resolve({"Ref": "Missing"})
    with pytest.raises(TemplateError, match="ImportValue"):
        small.resolver().resolve({"Fn::ImportValue": "other-stack-output"})


# -- dependencies and functions -------------------------------------------------------------------


def test_creation_order_puts_a_dlq_before_the_queue_that_names_it(small: Template) -> None:
    order = small.creation_order(["Queue", "Dlq", "Table"])
    assert order.index("Dlq") < order.index("Queue")
    assert sorted(order) == ["Dlq", "Queue", "Table"]


def test_function_spec_merges_globals_like_sam(small: Template) -> None:
    spec = small.function_spec("worker", LocalContext(endpoint_url=ENDPOINT))
    assert spec.logical_id == "WorkerFunction"
    assert spec.code_dir == Path("/project/functions/worker")
    assert (spec.handler_module, spec.handler_attr) == ("app", "handler")
    assert spec.handler_file == Path("/project/functions/worker/app.py")
    assert spec.timeout == 900  # the function's value wins over Globals
    assert spec.runtime == "python3.12"  # inherited
    assert spec.environment == {
        "TABLE": "jobbridge-Table",  # from Globals
        "SHARED": "from-function",  # the function wins on a clash
        "QUEUE": f"{ENDPOINT}/123456789012/jobbridge-work",
        "MEMORY": "256",  # environment values are strings
        "ENABLED": "true",
    }
    # Lists concatenate, Globals first; layers of this template become directories.
    assert spec.layer_dirs == [Path("/project/layers/shared")]
    assert spec.external_layers == ["arn:aws:lambda:us-east-1:017000801446:layer:Powertools:1"]


def test_function_names_short_or_logical(small: Template) -> None:
    assert small.function_logical_id("WorkerFunction") == "WorkerFunction"
    assert small.function_logical_id("worker") == "WorkerFunction"
    with pytest.raises(TemplateError, match="no function"):
        small.function_logical_id("nope")


def test_event_sources_are_resolved(small: Template) -> None:
    (source,) = small.event_sources("worker", "SQS")
    assert source.properties == {"Queue": "arn:aws:sqs:us-east-1:123456789012:jobbridge-work", "BatchSize": 10}


# -- the real template.yaml ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> Template:
    return load_template(paths.template_path())


def test_real_template_bridge_function_spec(real: Template) -> None:
    spec = real.function_spec("bridge", LocalContext(endpoint_url=ENDPOINT))
    root = paths.template_path().parent
    assert spec.logical_id == "BridgeFunction"
    assert spec.code_dir == root / "functions" / "bridge"
    assert spec.handler_file.is_file()
    assert (spec.handler_module, spec.handler_attr) == ("app", "handler")
    assert spec.layer_dirs == [root / "layers" / "core"]
    assert (spec.layer_dirs[0] / "jobbridge" / "__init__.py").is_file()
    # The environment names of docs/CONTRACTS.md, resolved to the local resources.
    assert spec.environment["JOBBRIDGE_TABLE_NAME"] == real.resolver().physical_name("JobsTable")
    assert spec.environment["JOBBRIDGE_QUEUE_URL_LAMBDA"] == f"{ENDPOINT}/123456789012/jobbridge-public-lambda"
    assert spec.environment["JOBBRIDGE_QUEUE_URL_BATCH"] == f"{ENDPOINT}/123456789012/jobbridge-public-batch"
    assert spec.environment["JOBBRIDGE_QUEUE_URL_PRIVATE"] == f"{ENDPOINT}/123456789012/jobbridge-private"


def test_real_template_api_function_spec(real: Template) -> None:
    spec = function_spec("ApiFunction", LocalContext(endpoint_url=ENDPOINT), paths.template_path())
    assert spec.code_dir.name == "api" and spec.handler_file.is_file()
    assert spec.environment["JOBBRIDGE_AUTH_MODE"] == "gateway"  # the stack overrides it to verify
    assert "JOBBRIDGE_TABLE_NAME" in spec.environment


def test_real_template_bridge_stream_trigger(real: Template) -> None:
    stream_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/label"
    context = LocalContext(attributes={"JobsTable": {"StreamArn": stream_arn}})
    (source,) = real.event_sources("bridge", "DynamoDB", context)
    assert source.properties["Stream"] == stream_arn
    assert "ReportBatchItemFailures" in source.properties["FunctionResponseTypes"]
