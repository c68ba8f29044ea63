variable "name_prefix" {
  description = "Name prefix of the environment."
  type        = string
}

variable "service_name" {
  description = "Name of the service (the contract's service name)."
  type        = string
}

variable "command" {
  description = "Arguments of the `vpp` CLI (the contract's command)."
  type        = list(string)
}

variable "port" {
  description = "gRPC port the service listens on (null for workers)."
  type        = number
  default     = null
}

variable "image" {
  description = "Container image of the platform (with `vpp` on PATH and `sh`)."
  type        = string
}

variable "image_repository_arn" {
  description = "ARN of the ECR repository of the image (the execution role pulls only from it)."
  type        = string
}

variable "container_user" {
  description = "User (uid:gid) the container runs as."
  type        = string
  default     = "1000:1000"
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64, as the image is built."
  type        = string
  default     = "X86_64"
}

variable "cpu" {
  description = "Task CPU units (1024 = one vCPU)."
  type        = number
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
}

variable "environment" {
  description = "Plain environment variables of the container (names from the contract)."
  type        = map(string)
}

variable "secrets" {
  description = "Environment variables taken from Secrets Manager: name -> valueFrom (secret ARN[:json-key::])."
  type        = map(string)
  default     = {}
}

variable "secret_arns" {
  description = "ARNs of the secrets the execution role may read (only this service's)."
  type        = list(string)
  default     = []
}

variable "config_toml_variable" {
  description = "Variable holding the configuration the entry command writes to $VPP_CONFIG."
  type        = string
}

variable "state_dir" {
  description = "Writable scratch folder of the container (VPP_STATE_DIR; the root filesystem is read-only)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the environment (logs, queues, archive, secrets)."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the service's log group (days)."
  type        = number
}

variable "sqs_url_arns" {
  description = "Queues whose URL the service resolves (all four for any SQS user)."
  type        = list(string)
  default     = []
}

variable "sqs_consume_arns" {
  description = "Queues the service receives from and deletes from."
  type        = list(string)
  default     = []
}

variable "sqs_send_arns" {
  description = "Queues the service sends to."
  type        = list(string)
  default     = []
}

variable "archive_bucket_arn" {
  description = "Archive bucket the service reads and writes under archive_prefix (null: no access)."
  type        = string
  default     = null
}

variable "archive_prefix" {
  description = "Key prefix of the archive in its bucket."
  type        = string
  default     = ""
}

variable "cluster_arn" {
  description = "ECS cluster ARN."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name (autoscaling resource id)."
  type        = string
}

variable "service_connect_namespace_arn" {
  description = "Cloud Map namespace of ECS Service Connect (gRPC services are registered by name)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the service."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR block of the VPC (gRPC traffic stays inside it)."
  type        = string
}

variable "vpc_grpc_ports" {
  description = "gRPC ports of other services this one calls inside the VPC."
  type        = list(number)
  default     = []
}

variable "subnet_ids" {
  description = "Private subnets of the tasks."
  type        = list(string)
}

variable "temporal" {
  description = "The service connects to Temporal."
  type        = bool
  default     = false
}

variable "temporal_cidrs" {
  description = "Where the Temporal frontend is (Temporal Cloud: 0.0.0.0/0; self-hosted: its subnets)."
  type        = list(string)
  default     = []
}

variable "temporal_port" {
  description = "Port of the Temporal frontend."
  type        = number
  default     = 7233
}

variable "database_security_group_id" {
  description = "Security group of PostgreSQL, for services that connect to it (null: no access)."
  type        = string
  default     = null
}

variable "database_port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}

variable "target_group_arn" {
  description = "Load balancer target group of the service (null: none)."
  type        = string
  default     = null
}

variable "desired_count" {
  description = "Tasks to run (the starting count of an autoscaled service)."
  type        = number
}

variable "scale_on_queue_name" {
  description = "Request queue whose depth scales the service (null: fixed count)."
  type        = string
  default     = null
}

variable "min_count" {
  description = "Fewest tasks of an autoscaled service."
  type        = number
  default     = 1
}

variable "max_count" {
  description = "Most tasks of an autoscaled service."
  type        = number
  default     = 4
}

variable "backlog_high" {
  description = "Visible messages above which an autoscaled service adds tasks."
  type        = number
  default     = 5
}

variable "backlog_per_step" {
  description = "Backlog beyond backlog_high at which two tasks are added at once instead of one."
  type        = number
  default     = 20
}
