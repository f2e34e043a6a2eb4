//! [`Deliveries`]: the table of a run's deliveries, keyed by URL scheme, and the one choice
//! per device that its upload and its lifecycle requests both go through.
//!
//! Owns: registering deliveries under their schemes and picking one per device (a command
//! first, else the URL's scheme). Must not: know any protocol: each delivery says its schemes
//! and checks its URLs.

use super::{Action, ByteMeter, Delivered, Delivery, DeliveryError, ErrorKind, Phase, Reply};
use super::{command, http, ssh};
use crate::lifecycle::Lifecycle;
use crate::payload::Payload;
use crate::registry::{Device, Registry};
use std::fmt;
use std::time::Instant;

/// Every delivery of a run, chosen per device: the command delivery for devices that have a
/// command (`--deliver-cmd`, or a non-empty `cmd` column), else the delivery registered for the
/// URL's scheme (a table: `http` and `https`, `ssh`, then the ones a program registers). The
/// upload and the lifecycle's requests of a device go through the same choice
/// ([`Deliveries::pick`]).
pub struct Deliveries {
    deliveries: Vec<Box<dyn Delivery>>,
    /// Scheme (lower case) → index in `deliveries`.
    schemes: Vec<(String, usize)>,
    command: Option<command::CommandDelivery>,
}

impl Deliveries {
    /// The built-in deliveries: `http`, `https` and `ssh`.
    pub fn new(http: http::HttpDelivery, ssh: ssh::SshDelivery) -> Deliveries {
        let empty = Deliveries {
            deliveries: Vec::new(),
            schemes: Vec::new(),
            command: None,
        };
        empty.register(Box::new(http)).register(Box::new(ssh))
    }

    /// Adds `delivery` for each of its [`Delivery::schemes`] (compared without case). A scheme
    /// already registered keeps its delivery: the built-in schemes cannot be replaced.
    pub fn register(self, delivery: Box<dyn Delivery>) -> Deliveries {
        let schemes: Vec<String> = delivery.schemes().iter().map(|s| s.to_string()).collect();
        self.add(&schemes, delivery)
    }

    /// Devices whose URL has `scheme` (`adb` for `adb://...`; compared without case) go
    /// through `delivery` (and so do its own [`Delivery::schemes`]). The registry must accept
    /// the scheme too (see [`crate::registry::LoadOptions::schemes`]).
    pub fn with_scheme(self, scheme: &str, delivery: Box<dyn Delivery>) -> Deliveries {
        let mut schemes: Vec<String> = delivery.schemes().iter().map(|s| s.to_string()).collect();
        schemes.push(scheme.to_string());
        self.add(&schemes, delivery)
    }

    fn add(mut self, schemes: &[String], delivery: Box<dyn Delivery>) -> Deliveries {
        let index = self.deliveries.len();
        self.deliveries.push(delivery);
        for scheme in schemes {
            let scheme = scheme.to_ascii_lowercase();
            if self.by_scheme(&scheme).is_none() {
                self.schemes.push((scheme, index));
            }
        }
        self
    }

    /// Devices that have a command go through `command`, whatever their URL.
    pub fn with_command(mut self, command: command::CommandDelivery) -> Deliveries {
        self.command = Some(command);
        self
    }

    /// The schemes registered, in order.
    pub fn schemes(&self) -> impl Iterator<Item = &str> {
        self.schemes.iter().map(|(scheme, _)| scheme.as_str())
    }

    fn by_scheme(&self, scheme: &str) -> Option<&dyn Delivery> {
        let scheme = scheme.to_ascii_lowercase();
        let (_, index) = self.schemes.iter().find(|(name, _)| *name == scheme)?;
        Some(self.deliveries[*index].as_ref())
    }

    /// The delivery for `device`, or why there is none.
    pub fn pick(&self, registry: &Registry, device: &Device) -> Result<&dyn Delivery, String> {
        if let Some(command) = &self.command
            && command.applies_to(registry, device)
        {
            return Ok(command);
        }
        let scheme = crate::address::scheme(&device.url).unwrap_or("");
        self.by_scheme(scheme).ok_or_else(|| {
            format!(
                "no delivery for the URL scheme '{}' of {:?}",
                scheme.to_ascii_lowercase(),
                device.url
            )
        })
    }

    /// One attempt to `device`, through the delivery [`Deliveries::pick`] chooses.
    pub fn attempt(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliveryError> {
        let delivery = self
            .pick(registry, device)
            .map_err(|message| unreachable_device(Phase::Connect, message))?;
        delivery.attempt(registry, device, payload, meter, deadline)
    }

    /// Whether `device`'s delivery (the one [`Deliveries::pick`] chooses) has the lifecycle's
    /// `action`; `Err` says what to give.
    pub fn configured(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
    ) -> Result<(), String> {
        self.pick(registry, device)?.configured(action, lifecycle)
    }

    /// The lifecycle's `action` to `device`, through the delivery that uploads to it; `None`
    /// when that delivery has none configured.
    pub fn request(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
        until: Option<Instant>,
    ) -> Option<Result<Reply, DeliveryError>> {
        match self.pick(registry, device) {
            Ok(delivery) => delivery.request(registry, device, action, lifecycle, until),
            Err(message) => Some(Err(unreachable_device(action.phase(), message))),
        }
    }

    /// Ends every attempt in flight at once (the end of a shutdown's grace period).
    pub fn shutdown(&self) {
        for delivery in &self.deliveries {
            delivery.shutdown();
        }
        if let Some(command) = &self.command {
            Delivery::shutdown(command);
        }
    }
}

/// The registry's URL check: the delivery registered for the URL's scheme checks it; a URL
/// no delivery takes gets the registry's words (the supported schemes, the command column).
impl crate::registry::UrlCheck for Deliveries {
    fn check_url(&self, url: &str) -> Result<(), String> {
        match crate::address::scheme(url).and_then(|scheme| self.by_scheme(scheme)) {
            Some(delivery) => delivery.check_url(url),
            None => {
                // Not one of ours: the registry's words, naming every scheme registered.
                let built_in = crate::registry::SUPPORTED_SCHEMES;
                let extra: Vec<&str> = self.schemes().filter(|s| !built_in.contains(s)).collect();
                crate::registry::check_url_with(url, &extra)
            }
        }
    }
}

/// A device no delivery serves (a URL scheme nobody registered).
fn unreachable_device(phase: Phase, message: String) -> DeliveryError {
    DeliveryError {
        phase,
        kind: ErrorKind::Request,
        message,
        retry_after: None,
        bytes_sent: 0,
    }
}

impl fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schemes: Vec<&str> = self.schemes().collect();
        f.debug_struct("Deliveries")
            .field("schemes", &schemes)
            .field("command", &self.command)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::command::{CommandDelivery, CommandOptions};
    use crate::delivery::http::{HttpDelivery, HttpOptions};
    use crate::delivery::ssh::{SshDelivery, SshOptions};
    use crate::lifecycle::VersionCheck;
    use crate::registry::{self, LoadOptions, UrlCheck};
    use crate::template::Template;

    fn deliveries() -> Deliveries {
        let http = HttpDelivery::new(HttpOptions::default());
        let ssh = SshDelivery::new(SshOptions::default());
        Deliveries::new(http, ssh).with_command(CommandDelivery::new(CommandOptions::default()))
    }

    /// The lifecycle of a device with a `cmd` value and an `ssh://` URL went over SSH while its
    /// upload went through the command: both now go through the one choice.
    #[test]
    fn a_command_device_with_an_ssh_url_gets_its_lifecycle_through_the_command() {
        let deliveries = deliveries();
        let csv = "id,url,cmd\ncmd,ssh://h/fw,true\nplain,ssh://h/fw2,\n";
        let registry = registry::load_with("d.csv", csv.as_bytes(), &LoadOptions::default())
            .expect("registry");
        let lifecycle = Lifecycle {
            check: Some(VersionCheck {
                command: Some(Template::parse("cat /etc/version").unwrap()),
                url: None,
                version: Some("2".into()),
                pattern: None,
            }),
            ..Lifecycle::default()
        };
        let [command, plain] = &registry.devices[..] else {
            panic!("two devices")
        };
        let probe = |device| deliveries.configured(&registry, device, Action::Probe, &lifecycle);
        let refused = probe(command).unwrap_err();
        assert!(refused.contains("delivered by a command"), "{refused}");
        assert_eq!(probe(plain), Ok(()));
        let request = deliveries.request(&registry, command, Action::Probe, &lifecycle, None);
        assert!(
            request.is_none(),
            "a command device was probed: {request:?}"
        );
    }

    #[test]
    fn urls_are_checked_by_the_delivery_of_their_scheme() {
        let deliveries = deliveries();
        assert_eq!(deliveries.check_url("http://h/x"), Ok(()));
        let ssh = deliveries.check_url("ssh://h/").unwrap_err();
        assert!(ssh.contains("no remote path"), "{ssh}");
        let unknown = deliveries.check_url("ftp://h/x").unwrap_err();
        assert!(unknown.starts_with("unsupported scheme 'ftp'"), "{unknown}");
        let schemes: Vec<&str> = deliveries.schemes().collect();
        assert_eq!(schemes, ["http", "https", "ssh"]);
    }
}
