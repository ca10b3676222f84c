//! [`Extensions`]: what layers above `vm` keep with a VM, one value per
//! type, so the VM layer need not know them (the migration layer keeps a
//! VM's default migration there).

use std::any::{Any, TypeId};
use std::collections::HashMap;

/// Values of any type, at most one per type, kept with a [`Vm`](crate::Vm)
/// for the layers above it.
///
/// ```
/// use virtest_vm::Extensions;
/// #[derive(Debug, PartialEq)]
/// struct Retries(u32);
/// let mut extensions = Extensions::default();
/// extensions.insert(Retries(3));
/// assert_eq!(extensions.get::<Retries>(), Some(&Retries(3)));
/// assert_eq!(extensions.get::<u8>(), None);
/// ```
#[derive(Default)]
pub struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// Keeps `value`, returning the value of its type kept before.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        let old = self.0.insert(TypeId::of::<T>(), Box::new(value))?;
        old.downcast().ok().map(|boxed| *boxed)
    }

    /// The value of type `T`, if one is kept.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// Takes the value of type `T` out.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let old = self.0.remove(&TypeId::of::<T>())?;
        old.downcast().ok().map(|boxed| *boxed)
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("count", &self.0.len())
            .finish()
    }
}
