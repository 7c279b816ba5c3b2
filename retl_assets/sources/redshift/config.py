from typing import Literal

from pydantic import Field, model_validator

from retl_assets.project.schema import Secret, SourceBase

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class RedshiftConfig(SourceBase):
    """One Redshift database, reached over the PostgreSQL wire protocol. Authenticate with
    exactly one of: `user` + `password`; `cluster_identifier` (IAM, a provisioned cluster;
    with `db_user` or as the caller's own IAM identity); `workgroup` (IAM, Serverless)."""

    type: Literal["redshift"]
    host: str = Field(description="the cluster's or workgroup's endpoint")
    port: int = 5439
    database: str
    user: str | None = None
    password: Secret | None = None
    cluster_identifier: str | None = Field(
        None, description="IAM auth: temporary credentials from redshift:GetClusterCredentials")
    workgroup: str | None = Field(
        None, description="IAM auth (Serverless): from redshift-serverless:GetCredentials")
    db_user: str | None = Field(
        None, description="with cluster_identifier: the database user to log on as; without "
                          "it, the caller's IAM identity (GetClusterCredentialsWithIAM)")
    region: str | None = Field(None, description="AWS region; else the default chain's")
    aws_profile: str | None = Field(None, description="AWS profile; else the default chain")
    sslmode: SslMode = "require"
    schema_: str | None = Field(None, alias="schema", description="search_path for the models")

    @model_validator(mode="after")
    def _one_auth(self):
        forms = [name for name, given in (
            ("user/password", self.user is not None or self.password is not None),
            ("cluster_identifier", self.cluster_identifier is not None),
            ("workgroup", self.workgroup is not None)) if given]
        if len(forms) != 1:
            raise ValueError(
                "give exactly one way to log on: `user` and `password`; or `cluster_identifier` "
                "(IAM, with optional `db_user`); or `workgroup` (IAM, Serverless)"
                + (f" - got {' and '.join(forms)}" if forms else " - got none"))
        if forms == ["user/password"] and (self.user is None or self.password is None):
            raise ValueError("password auth needs both `user` and `password`")
        if self.db_user is not None and self.cluster_identifier is None:
            raise ValueError("`db_user` goes with `cluster_identifier` (Serverless logs on as "
                             "the caller's IAM identity)")
        if forms == ["user/password"] and (self.region or self.aws_profile):
            raise ValueError("`region` and `aws_profile` are for IAM auth only")
        return self
