"""What a Redshift session logs on with: the configured user and password, or temporary
credentials that IAM hands out (boto3's default credential chain: environment, profile,
instance or task role). The password lives only here and in the driver's call."""

from __future__ import annotations

from dataclasses import dataclass, field

from retl_assets.errors import SourceError

DURATION_S = 900  # the shortest the APIs allow; a session is opened per query


@dataclass(frozen=True)
class Login:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PasswordAuth:
    user: str
    password: str = field(repr=False)

    def login(self, source: str, database: str) -> Login:
        return Login(self.user, self.password)


@dataclass(frozen=True)
class IamAuth:
    """GetClusterCredentials (with `db_user`), GetClusterCredentialsWithIAM (without), or
    redshift-serverless GetCredentials (`workgroup`)."""

    cluster_identifier: str | None = None
    workgroup: str | None = None
    db_user: str | None = None
    region: str | None = None
    profile: str | None = None

    def login(self, source: str, database: str) -> Login:
        import boto3
        import botocore.exceptions

        try:
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            if self.workgroup is not None:
                answer = session.client("redshift-serverless").get_credentials(
                    workgroupName=self.workgroup, dbName=database, durationSeconds=DURATION_S)
                return Login(answer["dbUser"], answer["dbPassword"])
            client = session.client("redshift")
            if self.db_user is not None:
                answer = client.get_cluster_credentials(
                    ClusterIdentifier=self.cluster_identifier, DbUser=self.db_user,
                    DbName=database, DurationSeconds=DURATION_S, AutoCreate=False)
            else:
                answer = client.get_cluster_credentials_with_iam(
                    ClusterIdentifier=self.cluster_identifier, DbName=database,
                    DurationSeconds=DURATION_S)
            return Login(answer["DbUser"], answer["DbPassword"])
        except botocore.exceptions.NoCredentialsError:
            raise SourceError(f"source {source!r}: IAM auth found no AWS credentials (set them "
                              "in the environment, a profile or the instance role)") from None
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            raise SourceError(f"source {source!r}: AWS refused temporary database credentials: "
                              f"{err.get('Code', '?')}: {err.get('Message', '')}") from None
        except botocore.exceptions.BotoCoreError as e:
            raise SourceError(f"source {source!r}: cannot get temporary database credentials "
                              f"from AWS: {e}") from None
