# The staging environment: the platform module fed with this folder's contract.json, which
# `python -m stack.deployment --config infra/terraform/environments/staging/openvpp.toml` writes.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
  # Remote state in S3 (encrypted, locked): terraform init -backend-config=backend.hcl (README).
  backend "s3" {}
}

locals {
  contract = jsondecode(file("${path.module}/contract.json"))
}

provider "aws" {
  # The code's SQS and S3 clients use the settings' region, so the resources must be there.
  region = local.contract.region
  default_tags {
    tags = {
      Project     = "openvpp"
      Environment = "staging"
      ManagedBy   = "terraform"
    }
  }
}

module "platform" {
  source   = "../../modules/platform"
  contract = local.contract

  image                = var.image
  image_repository_arn = var.image_repository_arn
  temporal_address     = var.temporal_address
  temporal_mtls        = var.temporal_mtls
  temporal_cidrs       = var.temporal_cidrs
  alarm_emails         = var.alarm_emails

  vpc_cidr_block             = var.vpc_cidr_block
  availability_zone_suffixes = var.availability_zone_suffixes
  nat_gateway_per_az         = var.nat_gateway_per_az

  database_instance_class        = var.database_instance_class
  database_multi_az              = var.database_multi_az
  database_backup_retention_days = var.database_backup_retention_days
  database_deletion_protection   = var.database_deletion_protection

  service_cpu       = var.service_cpu
  service_memory    = var.service_memory
  service_min_count = var.service_min_count
  service_max_count = var.service_max_count

  public_certificate_arn = var.public_certificate_arn
  public_allowed_cidrs   = var.public_allowed_cidrs
}
