//! The standard `grpc.health.v1` service. Liveness reflects the process
//! only, so a database outage never restarts every pod; readiness and the
//! per-service entries go NOT_SERVING when sqlgate stops taking work.

use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, health_reporter},
};

/// The names `Check` and `Watch` answer for.
pub const HEALTH_NAMES: [&str; 5] = [
    "",
    "liveness",
    "readiness",
    "sqlgate.v1.Query",
    "sqlgate.v1.Sessions",
];

/// The names that follow the service's readiness (all but liveness).
const READINESS_NAMES: [&str; 4] = ["", "readiness", "sqlgate.v1.Query", "sqlgate.v1.Sessions"];

/// Sets the health answers.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    /// A reporter and the service that answers from it, everything SERVING.
    pub async fn start() -> (
        Self,
        HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = health_reporter();
        for name in HEALTH_NAMES {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        (Self { reporter }, service)
    }

    /// Readiness (and the service entries) go NOT_SERVING; liveness stays.
    pub async fn set_not_ready(&self) {
        for name in READINESS_NAMES {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}
