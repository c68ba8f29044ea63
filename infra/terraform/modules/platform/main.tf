# One environment of openvpp, built from its deployment contract (contract.json, written by
# `python -m stack.deployment`): every queue name, queue setting, service, command, port and
# environment variable name below comes from the contract; this module only supplies the values.

data "aws_region" "current" {}

locals {
  contract = var.contract
  name     = local.contract.queue_prefix
  services = { for service in local.contract.services : service.name => service }
  ports    = { for service in local.contract.services : service.name => service.port if service.port != null }
  public   = [for service in local.contract.services : service.name if service.public]

  # Values of the contract's environment variables: constants from the contract, the bucket created
  # here, and secrets (Secrets Manager references) for the rest.
  plain_environment = merge(local.contract.environment_constants, {
    VPP_ARCHIVE_S3_BUCKET = module.archive.bucket
  })
  temporal_secret = {
    for name, key in module.secrets.temporal_secret_keys :
    name => "${module.secrets.temporal_secret_arn}:${key}::" if var.temporal_mtls || !contains(local.contract.optional_secret_environment, name)
  }
  secret_environment = merge({ DATABASE_URL = module.database.database_url_secret_arn }, local.temporal_secret)
  secret_arns = merge(
    { DATABASE_URL = module.database.database_url_secret_arn },
    { for name in keys(local.temporal_secret) : name => module.secrets.temporal_secret_arn },
  )
  provided  = setunion(keys(local.plain_environment), keys(local.secret_environment))
  optional  = var.temporal_mtls ? [] : local.contract.optional_secret_environment
  read      = distinct(flatten([for service in local.contract.services : service.environment]))
  unmatched = setsubtract(setsubtract(local.read, local.provided), local.optional)
}

resource "terraform_data" "contract" {
  input = local.contract.version
  lifecycle {
    precondition {
      condition     = local.contract.version == 1
      error_message = "contract.json has version ${local.contract.version}; this module reads version 1."
    }
    precondition {
      condition     = data.aws_region.current.name == local.contract.region
      error_message = "The provider's region must be the contract's region (settings [stack] sqs_region): the code's SQS and S3 clients use it."
    }
    precondition {
      condition     = length(local.unmatched) == 0
      error_message = "Environment variables the contract's services read but nothing provides: ${join(", ", local.unmatched)}."
    }
  }
}

module "kms" {
  source = "../kms"
  name   = local.name
}

module "network" {
  source             = "../network"
  name               = local.name
  cidr_block         = var.vpc_cidr_block
  availability_zones = [for suffix in var.availability_zone_suffixes : "${local.contract.region}${suffix}"]
  nat_gateway_per_az = var.nat_gateway_per_az
  kms_key_arn        = module.kms.key_arn
  log_retention_days = var.log_retention_days
}

resource "aws_sns_topic" "alarms" {
  name              = "${local.name}-alarms"
  kms_master_key_id = module.kms.key_arn
}

resource "aws_sns_topic_subscription" "alarms" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

module "queues" {
  source            = "../queues"
  queues            = local.contract.queues
  kms_key_arn       = module.kms.key_arn
  max_message_age_s = local.contract.max_message_age_s
  alarm_topic_arn   = aws_sns_topic.alarms.arn
}

module "archive" {
  source                       = "../archive"
  name                         = local.name
  archive_prefix               = local.contract.archive_prefix
  kms_key_arn                  = module.kms.key_arn
  infrequent_access_after_days = var.archive_infrequent_access_after_days
  glacier_after_days           = var.archive_glacier_after_days
}

module "database" {
  source                = "../database"
  name                  = local.name
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  kms_key_arn           = module.kms.key_arn
  instance_class        = var.database_instance_class
  multi_az              = var.database_multi_az
  backup_retention_days = var.database_backup_retention_days
  deletion_protection   = var.database_deletion_protection
}

module "secrets" {
  source           = "../secrets"
  name             = local.name
  kms_key_arn      = module.kms.key_arn
  temporal_address = var.temporal_address
}

# -- cluster ---------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "exec" {
  name              = "/openvpp/${local.name}/ecs-exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = module.kms.key_arn
}

resource "aws_ecs_cluster" "this" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  configuration {
    execute_command_configuration {
      kms_key_id = module.kms.key_arn
      logging    = "OVERRIDE"
      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.exec.name
      }
    }
  }
}

resource "aws_service_discovery_http_namespace" "this" {
  name        = local.name
  description = "ECS Service Connect names of the gRPC services of ${local.name}"
}

module "service" {
  source   = "../service"
  for_each = local.services

  name_prefix          = local.name
  service_name         = each.key
  command              = each.value.command
  port                 = each.value.port
  image                = var.image
  image_repository_arn = var.image_repository_arn
  cpu_architecture     = var.cpu_architecture
  cpu                  = lookup(var.service_cpu, each.key, var.default_cpu)
  memory               = lookup(var.service_memory, each.key, var.default_memory)
  config_toml_variable = local.contract.config_toml_variable
  state_dir            = local.contract.container_state_dir
  environment = merge(
    { for name in each.value.environment : name => local.plain_environment[name] if contains(keys(local.plain_environment), name) },
    { (local.contract.config_toml_variable) = local.contract.config_toml },
  )
  secrets     = { for name in each.value.environment : name => local.secret_environment[name] if contains(keys(local.secret_environment), name) }
  secret_arns = distinct([for name in each.value.environment : local.secret_arns[name] if contains(keys(local.secret_arns), name)])

  kms_key_arn        = module.kms.key_arn
  log_retention_days = var.log_retention_days

  sqs_url_arns       = length(each.value.sqs_consume) + length(each.value.sqs_send) == 0 ? [] : values(module.queues.arns)
  sqs_consume_arns   = [for key in each.value.sqs_consume : module.queues.arns[key]]
  sqs_send_arns      = [for key in each.value.sqs_send : module.queues.arns[key]]
  archive_bucket_arn = each.value.archive == "read_write" ? module.archive.bucket_arn : null
  archive_prefix     = local.contract.archive_prefix

  cluster_arn                   = aws_ecs_cluster.this.arn
  cluster_name                  = aws_ecs_cluster.this.name
  service_connect_namespace_arn = aws_service_discovery_http_namespace.this.arn
  vpc_id                        = module.network.vpc_id
  vpc_cidr_block                = module.network.vpc_cidr_block
  vpc_grpc_ports                = [for name in each.value.grpc_calls : local.ports[name]]
  subnet_ids                    = module.network.private_subnet_ids
  temporal                      = each.value.temporal
  temporal_cidrs                = var.temporal_cidrs
  temporal_port                 = var.temporal_port
  database_security_group_id    = each.value.database ? module.database.security_group_id : null
  database_port                 = module.database.port
  target_group_arn              = contains(local.public, each.key) && var.public_certificate_arn != null ? aws_lb_target_group.public[each.key].arn : null

  desired_count       = max(each.value.desired_count, lookup(var.service_min_count, each.key, 1))
  scale_on_queue_name = each.value.scale_on_queue == null ? null : module.queues.names[each.value.scale_on_queue]
  min_count           = lookup(var.service_min_count, each.key, 1)
  max_count           = lookup(var.service_max_count, each.key, 4)
}

# -- public entry of the services clients outside the VPC reach (the fleet gateway) ----------------

locals {
  public_services = var.public_certificate_arn == null ? {} : { for name in local.public : name => local.ports[name] }
}

resource "aws_security_group" "public" {
  count       = length(local.public_services) == 0 ? 0 : 1
  name        = "${local.name}-public-lb"
  description = "TLS entry of ${local.name}'s public gRPC services"
  vpc_id      = module.network.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "public" {
  for_each          = length(local.public_services) == 0 ? toset([]) : toset(var.public_allowed_cidrs)
  security_group_id = aws_security_group.public[0].id
  description       = "TLS from sites and concentrators"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "public" {
  for_each          = local.public_services
  security_group_id = aws_security_group.public[0].id
  description       = "to ${each.key} inside the VPC"
  cidr_ipv4         = module.network.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = each.value
  to_port           = each.value
}

resource "aws_lb" "public" {
  count                            = length(local.public_services) == 0 ? 0 : 1
  name                             = substr("${local.name}-public", 0, 32)
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = module.network.public_subnet_ids
  security_groups                  = [aws_security_group.public[0].id]
  enable_deletion_protection       = var.database_deletion_protection
  enable_cross_zone_load_balancing = true
  access_logs {
    bucket  = module.archive.log_bucket
    prefix  = "lb"
    enabled = true
  }
}

resource "aws_lb_target_group" "public" {
  for_each           = local.public_services
  name               = substr("${local.name}-${each.key}", 0, 32)
  port               = each.value
  protocol           = "TCP"
  target_type        = "ip"
  vpc_id             = module.network.vpc_id
  preserve_client_ip = "false"
  health_check {
    protocol = "TCP"
  }
}

resource "aws_lb_listener" "public" {
  for_each          = local.public_services
  load_balancer_arn = aws_lb.public[0].arn
  port              = 443
  protocol          = "TLS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.public_certificate_arn
  alpn_policy       = "HTTP2Only"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.public[each.key].arn
  }
}
