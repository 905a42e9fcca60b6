"""``spawn:aws-reference``: a compliant serverless estate in a local moto server on 127.0.0.1.

The CLOUD controls reach it exactly as they reach AWS: boto3 with ``cloud.aws.endpoint_url``
(and fixed fake credentials: nothing leaves 127.0.0.1). The estate is what a team running
PatientRecords on Lambda would have: a customer-managed KMS key with rotation and a narrow key
policy; a DynamoDB table and an S3 bucket under it, with point-in-time recovery and a backup
plan; a multi-region CloudTrail with log-file validation into a COMPLIANCE-locked, versioned,
private bucket; one role per function with nothing wildcarded on data; the database secret in
Secrets Manager with rotation; an ALB with a TLS 1.2+ policy and an HTTP listener that only
redirects, an API Gateway domain on TLS_1_2 and an access-logged stage; functions on private
subnets. Each named defect (``targets/catalog.py``) breaks exactly one CLOUD control.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from targets.operators import toml_text

if TYPE_CHECKING:
    from targets.serve import Served as ServedType

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
RETENTION_DAYS = 2190  # six years (164.316(b)(2)(i), applied to audit logs as policy)
AUDIT_BUCKET = "patients-audit-logs"
_ZIP = b"PK\x05\x06" + b"\0" * 18  # an empty zip: the functions are never invoked


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
            ],
        }
    )


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def reset(url: str) -> None:
    """Empty the moto server at ``url``.

    Its backends are one per process, shared by every server started in it (tests start
    several in one process).
    """
    import urllib.request

    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


class Estate:
    """Builds the estate with boto3 against the local server."""

    def __init__(self, endpoint: str, defects: frozenset[str]) -> None:
        import boto3

        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.client: Callable[[str], Any] = lambda name: session.client(name, endpoint_url=endpoint)
        self.defects = defects
        self.tags = [{"Key": "phi", "Value": "true"}]

    def build(self) -> None:
        """The whole estate, defects applied."""
        key = self._key()
        self._data(key)
        self._audit()
        private, public = self._network()
        secret = self._secret(key)
        self._functions(key, secret, private, public)
        self._edge(public)
        backup = self.client("backup")
        rule = {"RuleName": "daily", "TargetBackupVaultName": "Default"}
        rule["ScheduleExpression"] = "cron(0 5 * * ? *)"
        backup.create_backup_plan(BackupPlan={"BackupPlanName": "phi-daily", "Rules": [rule]})

    def _key(self) -> str:
        root = f"arn:aws:iam::{ACCOUNT}:role"
        policy = _policy(
            {
                "Sid": "KeyAdministration",
                "Effect": "Allow",
                "Principal": {"AWS": f"{root}/key-admin"},
                "Action": ["kms:Describe*", "kms:Enable*", "kms:Put*", "kms:Get*", "kms:List*"],
                "Resource": "*",
            },
            {
                "Sid": "UseByFunctions",
                "Effect": "Allow",
                "Principal": {"AWS": [f"{root}/patients-read-fn", f"{root}/patients-write-fn"]},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
            },
        )
        kms = self.client("kms")
        arn = str(kms.create_key(Description="PHI data", Policy=policy)["KeyMetadata"]["Arn"])
        if "rotation-off" not in self.defects:
            kms.enable_key_rotation(KeyId=arn)
        return arn

    def _data(self, key: str) -> None:
        ddb = self.client("dynamodb")
        ddb.create_table(
            TableName="patients",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key},
            Tags=self.tags,
        )
        pitr = "pitr-off" not in self.defects
        ddb.update_continuous_backups(
            TableName="patients",
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": pitr},
        )
        s3 = self.client("s3")
        s3.create_bucket(Bucket="patients-documents")
        s3.put_bucket_tagging(Bucket="patients-documents", Tagging={"TagSet": self.tags})
        default = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
        s3.put_bucket_encryption(
            Bucket="patients-documents",
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": default}]
            },
        )
        self._private("patients-documents")
        self.client("sqs").create_queue(
            QueueName="lab-results", Attributes={"KmsMasterKeyId": key}, tags={"phi": "true"}
        )
        self.client("sns").create_topic(
            Name="patient-alerts", Attributes={"KmsMasterKeyId": key}, Tags=self.tags
        )

    def _private(self, bucket: str) -> None:
        flags = (
            "BlockPublicAcls",
            "IgnorePublicAcls",
            "BlockPublicPolicy",
            "RestrictPublicBuckets",
        )
        self.client("s3").put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=dict.fromkeys(flags, True)
        )

    def _audit(self) -> None:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=AUDIT_BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_bucket_versioning(Bucket=AUDIT_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        mode = "GOVERNANCE" if "governance-lock" in self.defects else "COMPLIANCE"
        retention = {"Mode": mode, "Days": RETENTION_DAYS}
        s3.put_object_lock_configuration(
            Bucket=AUDIT_BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": retention},
            },
        )
        self._private(AUDIT_BUCKET)
        trail = self.client("cloudtrail")
        trail.create_trail(
            Name="organization-trail",
            S3BucketName=AUDIT_BUCKET,
            IsMultiRegionTrail=True,
            EnableLogFileValidation="no-log-validation" not in self.defects,
        )
        trail.start_logging(Name="organization-trail")

    def _network(self) -> tuple[list[str], list[str]]:
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        zones = (f"{REGION}a", f"{REGION}b")
        private = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i + 1}.0/24", AvailabilityZone=z)
            for i, z in enumerate(zones)
        ]
        public = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i + 101}.0/24", AvailabilityZone=z)
            for i, z in enumerate(zones)
        ]
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        for subnet in public:
            ec2.associate_route_table(RouteTableId=table, SubnetId=subnet["Subnet"]["SubnetId"])
        main = ec2.describe_route_tables(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]},
            ]
        )["RouteTables"][0]["RouteTableId"]
        services = ["s3"] if "no-vpc-endpoint" in self.defects else ["dynamodb", "s3"]
        for service in services:  # gateway endpoints on the private subnets' (main) table
            ec2.create_vpc_endpoint(
                VpcId=vpc,
                ServiceName=f"com.amazonaws.{REGION}.{service}",
                VpcEndpointType="Gateway",
                RouteTableIds=[main],
            )
        return (
            [s["Subnet"]["SubnetId"] for s in private],
            [s["Subnet"]["SubnetId"] for s in public],
        )

    def _secret(self, key: str) -> str:
        sm = self.client("secretsmanager")
        arn = str(
            sm.create_secret(
                Name="patients-db", SecretString="synthetic", KmsKeyId=key, Tags=self.tags
            )["ARN"]
        )
        # managed rotation (no rotation function of ours: moto would run one in Docker)
        sm.rotate_secret(SecretId=arn, RotationRules={"AutomaticallyAfterDays": 30})
        return arn

    def _functions(self, key: str, secret: str, private: list[str], public: list[str]) -> None:
        for name, action in (("read", "dynamodb:GetItem"), ("write", "dynamodb:PutItem")):
            role = self._role(name, action, key, secret)
            env = {"TABLE_NAME": "patients", "DB_SECRET_ARN": secret}
            if name == "write" and "plaintext-secret" in self.defects:
                env["DB_PASSWORD"] = "synthetic-not-a-real-password"
            subnets = public if name == "write" and "public-subnet" in self.defects else private
            self.client("logs").create_log_group(
                logGroupName=f"/aws/lambda/patients-{name}", kmsKeyId=key
            )
            self.client("lambda").create_function(
                FunctionName=f"patients-{name}",
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": _ZIP},
                Environment={"Variables": env},
                KMSKeyArn=key,
                VpcConfig={"SubnetIds": subnets, "SecurityGroupIds": []},
                Tags={"phi": "true"},
            )
        auth = "NONE" if "public-function-url" in self.defects else "AWS_IAM"
        self.client("lambda").create_function_url_config(
            FunctionName="patients-read", AuthType=auth
        )

    def _role(self, name: str, action: str, key: str, secret: str) -> str:
        iam = self.client("iam")
        role_name = f"patients-{name}-fn"
        arn = str(
            iam.create_role(
                RoleName=role_name, AssumeRolePolicyDocument=_trust("lambda.amazonaws.com")
            )["Role"]["Arn"]
        )
        table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/patients"
        data: list[dict[str, Any]] = [
            {"Effect": "Allow", "Action": [action, "dynamodb:Query"], "Resource": table},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key},
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret},
        ]
        if name == "read" and "wildcard-policy" in self.defects:
            data.append({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"})
        iam.put_role_policy(RoleName=role_name, PolicyName="data", PolicyDocument=_policy(*data))
        network = iam.create_policy(
            PolicyName=f"{role_name}-network",
            PolicyDocument=_policy(
                {
                    "Effect": "Allow",
                    "Action": [
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DeleteNetworkInterface",
                    ],
                    "Resource": "*",
                }
            ),
        )["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=role_name, PolicyArn=network)
        return arn

    def _edge(self, public: list[str]) -> None:
        elb, acm = self.client("elbv2"), self.client("acm")
        cert = acm.request_certificate(DomainName="api.patients.example")["CertificateArn"]
        lb = elb.create_load_balancer(
            Name="patients-edge", Subnets=public, Scheme="internet-facing", Tags=self.tags
        )["LoadBalancers"][0]["LoadBalancerArn"]
        elb.modify_load_balancer_attributes(
            LoadBalancerArn=lb,
            Attributes=[
                {"Key": "access_logs.s3.enabled", "Value": "true"},
                {"Key": "access_logs.s3.bucket", "Value": AUDIT_BUCKET},
            ],
        )
        group = elb.create_target_group(Name="patients-read", TargetType="lambda")
        forward = {"Type": "forward", "TargetGroupArn": group["TargetGroups"][0]["TargetGroupArn"]}
        weak = "tls10-policy" in self.defects
        policy = "ELBSecurityPolicy-2016-08" if weak else "ELBSecurityPolicy-TLS13-1-2-2021-06"
        elb.create_listener(
            LoadBalancerArn=lb,
            Protocol="HTTPS",
            Port=443,
            SslPolicy=policy,
            Certificates=[{"CertificateArn": cert}],
            DefaultActions=[forward],
        )
        redirect = {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}
        elb.create_listener(
            LoadBalancerArn=lb,
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "redirect", "RedirectConfig": redirect}],
        )
        self._api(cert)

    def _api(self, cert: str) -> None:
        api = self.client("apigateway")
        api.create_domain_name(
            domainName="api.patients.example",
            regionalCertificateArn=cert,
            securityPolicy="TLS_1_2",
            endpointConfiguration={"types": ["REGIONAL"]},
        )
        self._http_api(cert)
        rest = api.create_rest_api(name="patients-api", tags={"phi": "true"})["id"]
        root = api.get_resources(restApiId=rest)["items"][0]["id"]
        api.put_method(
            restApiId=rest, resourceId=root, httpMethod="GET", authorizationType="AWS_IAM"
        )
        api.put_integration(restApiId=rest, resourceId=root, httpMethod="GET", type="MOCK")
        deployment = api.create_deployment(restApiId=rest)["id"]
        api.create_stage(restApiId=rest, stageName="prod", deploymentId=deployment)
        log = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:patients-api-access"
        api.update_stage(
            restApiId=rest,
            stageName="prod",
            patchOperations=[
                {"op": "replace", "path": "/accessLogSettings/destinationArn", "value": log},
                {
                    "op": "replace",
                    "path": "/accessLogSettings/format",
                    "value": "$context.requestId",
                },
            ],
        )

    def _http_api(self, cert: str) -> None:
        """An HTTP API (API Gateway v2) beside the REST one: its own domain, a logged stage."""
        v2 = self.client("apigatewayv2")
        v2.create_domain_name(
            DomainName="http.patients.example",
            DomainNameConfigurations=[
                {"CertificateArn": cert, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}
            ],
        )
        api = v2.create_api(Name="patients-http", ProtocolType="HTTP", Tags={"phi": "true"})
        log = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:patients-http-access"
        v2.create_stage(
            ApiId=api["ApiId"],
            StageName="$default",
            AccessLogSettings={"DestinationArn": log, "Format": "$context.requestId"},
        )


class _Running:
    def __init__(self, server: Any, port: int) -> None:
        self.server = server
        self.port = port

    def stop(self) -> None:
        self.server.stop()


def start(defects: frozenset[str], workdir: Path) -> tuple[ServedType, _Running]:
    """Start moto on 127.0.0.1, build the estate, write the operators' ``hipaa.toml``."""
    from moto.server import ThreadedMotoServer

    from targets.catalog import AWS_REFERENCE
    from targets.serve import Served

    for d in defects:
        AWS_REFERENCE.defect(d)  # KeyError for an unknown defect
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ[name] = "testing"  # the server's own clients, never real credentials
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        Estate(endpoint, defects).build()
    except BaseException:
        server.stop()
        raise
    tables: dict[str, dict[str, object]] = {
        "audit": {"min_retention_days": RETENTION_DAYS},
        "cloud": {"provider": "aws"},
        "cloud.aws": {
            "regions": [REGION],
            "endpoint_url": endpoint,
            "phi_tag": "phi=true",
            "vpc_endpoints": ["dynamodb", "s3"],
        },
    }
    config = workdir / "hipaa.toml"
    config.write_text(toml_text(tables, {}, "targets/aws_reference.py"))
    return Served(f"{host}:{port}", config, workdir), _Running(server, port)
