//! The workloads of a tenant.

use std::fmt;

/// A workload of a tenant: the four services and the two data stores the operator may run for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Auth,
    Chat,
    Billing,
    EmailWorker,
    Postgres,
    Redis,
}

impl Component {
    /// The four stateless services, in start-up order.
    pub const SERVICES: [Component; 4] = [Component::Auth, Component::Chat, Component::Billing, Component::EmailWorker];
    /// The data stores, run by the operator unless the tenant brings its own.
    pub const DATA_STORES: [Component; 2] = [Component::Postgres, Component::Redis];

    /// The name of the component's Service, Deployment and container, and the value of `SAASCHAT_COMPONENT`.
    pub const fn name(self) -> &'static str {
        match self {
            Component::Auth => "auth",
            Component::Chat => "chat",
            Component::Billing => "billing",
            Component::EmailWorker => "email-worker",
            Component::Postgres => "postgres",
            Component::Redis => "redis",
        }
    }

    /// The service of that name (`SAASCHAT_COMPONENT`); data stores are not services.
    pub fn service_named(name: &str) -> Option<Component> {
        Component::SERVICES.into_iter().find(|component| component.name() == name)
    }

    /// Whether the operator gives this component a `DATABASE_URL` (the email worker only reads a Redis stream).
    pub const fn uses_database(self) -> bool {
        matches!(self, Component::Auth | Component::Chat | Component::Billing)
    }

    /// The `OTEL_SERVICE_NAME` the operator gives the component, and its default in the services.
    pub fn telemetry_name(self) -> String {
        format!("saaschat-{}", self.name())
    }
}

impl fmt::Display for Component {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_round_trip_their_names_and_data_stores_are_not_services() {
        for component in Component::SERVICES {
            assert_eq!(Component::service_named(component.name()), Some(component));
        }
        for store in Component::DATA_STORES {
            assert_eq!(Component::service_named(store.name()), None);
            assert!(!store.uses_database());
        }
        assert_eq!(Component::service_named("Auth"), None, "names are exact");
        assert!(!Component::EmailWorker.uses_database());
        assert_eq!(Component::EmailWorker.telemetry_name(), "saaschat-email-worker");
    }
}
