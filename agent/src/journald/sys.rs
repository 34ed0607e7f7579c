//! The journal through libsystemd's `sd-journal` C API, loaded at run time with
//! `libloading`: the agent binary does not link libsystemd, so it starts on hosts
//! without it (the journald source then reports a clear error), and no LGPL binding
//! crate is needed. This is the only module of the agent with `unsafe` code; every
//! block says why it is sound.
//!
//! The `sd_journal` handle is not thread-safe: [`Journal`] is neither `Send` nor `Sync`
//! (it holds a raw pointer), so it stays on the thread that opened it.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;

/// Soname of the library, as every distribution ships it.
const LIBSYSTEMD: &str = "libsystemd.so.0";

/// `SD_JOURNAL_LOCAL_ONLY`: this machine's journal only, not remote ones merged in.
const SD_JOURNAL_LOCAL_ONLY: c_int = 1;

/// An error from the journal API: the call and the errno it returned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JournalError {
    #[error("cannot load {LIBSYSTEMD} (is libsystemd0 installed?): {0}")]
    Load(libloading::Error),
    #[error("{call} failed: {}", os_error(.errno))]
    Call { call: &'static str, errno: i32 },
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
}

type Handle = *mut c_void;

/// The functions used, resolved once.
struct Api {
    open: unsafe extern "C" fn(*mut Handle, c_int) -> c_int,
    open_directory: unsafe extern "C" fn(*mut Handle, *const c_char, c_int) -> c_int,
    close: unsafe extern "C" fn(Handle),
    add_match: unsafe extern "C" fn(Handle, *const c_void, usize) -> c_int,
    seek_head: unsafe extern "C" fn(Handle) -> c_int,
    seek_tail: unsafe extern "C" fn(Handle) -> c_int,
    seek_cursor: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    get_cursor: unsafe extern "C" fn(Handle, *mut *mut c_char) -> c_int,
    test_cursor: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    next: unsafe extern "C" fn(Handle) -> c_int,
    previous: unsafe extern "C" fn(Handle) -> c_int,
    get_realtime_usec: unsafe extern "C" fn(Handle, *mut u64) -> c_int,
    restart_data: unsafe extern "C" fn(Handle),
    enumerate_data: unsafe extern "C" fn(Handle, *mut *const c_void, *mut usize) -> c_int,
    set_data_threshold: unsafe extern "C" fn(Handle, usize) -> c_int,
    wait: unsafe extern "C" fn(Handle, u64) -> c_int,
    free: unsafe extern "C" fn(*mut c_void),
    /// Keeps the code behind the pointers above mapped.
    _lib: libloading::Library,
}

impl Api {
    #[allow(unsafe_code)]
    fn load() -> Result<Api, JournalError> {
        // SAFETY: loading libsystemd runs its ELF constructors, which only initialise
        // the library's own state; it is the library the C API is documented for.
        let lib = unsafe { libloading::Library::new(LIBSYSTEMD) }.map_err(JournalError::Load)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol's C prototype (from sd-journal(3)) is the function
                // pointer type of the field it is stored in; `_lib` keeps it mapped for
                // as long as the pointer lives.
                *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(JournalError::Load)?
            };
        }
        Ok(Api {
            open: sym!("sd_journal_open"),
            open_directory: sym!("sd_journal_open_directory"),
            close: sym!("sd_journal_close"),
            add_match: sym!("sd_journal_add_match"),
            seek_head: sym!("sd_journal_seek_head"),
            seek_tail: sym!("sd_journal_seek_tail"),
            seek_cursor: sym!("sd_journal_seek_cursor"),
            get_cursor: sym!("sd_journal_get_cursor"),
            test_cursor: sym!("sd_journal_test_cursor"),
            next: sym!("sd_journal_next"),
            previous: sym!("sd_journal_previous"),
            get_realtime_usec: sym!("sd_journal_get_realtime_usec"),
            restart_data: sym!("sd_journal_restart_data"),
            enumerate_data: sym!("sd_journal_enumerate_data"),
            set_data_threshold: sym!("sd_journal_set_data_threshold"),
            wait: sym!("sd_journal_wait"),
            // `free` of the C library libsystemd links: sd_journal_get_cursor's string
            // is malloc'ed there.
            free: sym!("free"),
            _lib: lib,
        })
    }
}

/// What `sd_journal_wait` saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Nothing new within the timeout.
    Nop,
    /// Entries were appended, or files added or removed.
    Changed,
}

/// An open journal.
pub(crate) struct Journal {
    api: Api,
    handle: Handle,
}

fn check(call: &'static str, r: c_int) -> Result<c_int, JournalError> {
    if r < 0 {
        Err(JournalError::Call { call, errno: -r })
    } else {
        Ok(r)
    }
}

fn cstring(s: &str) -> Result<CString, JournalError> {
    CString::new(s).map_err(|_| JournalError::Nul(s.to_string()))
}

impl Journal {
    /// Opens the journal files in `directory`, or the local system journal.
    #[allow(unsafe_code)]
    pub(crate) fn open(directory: Option<&Path>) -> Result<Journal, JournalError> {
        let api = Api::load()?;
        let mut handle: Handle = ptr::null_mut();
        let r = match directory {
            Some(dir) => {
                let path = cstring(&dir.to_string_lossy())?;
                // SAFETY: `handle` is a valid out-pointer; `path` is a NUL-terminated
                // string alive across the call.
                unsafe { (api.open_directory)(&mut handle, path.as_ptr(), 0) }
            }
            // SAFETY: `handle` is a valid out-pointer.
            None => unsafe { (api.open)(&mut handle, SD_JOURNAL_LOCAL_ONLY) },
        };
        check("sd_journal_open", r)?;
        Ok(Journal { api, handle })
    }

    /// Adds a `FIELD=value` match (same field: OR; different fields: AND).
    #[allow(unsafe_code)]
    pub(crate) fn add_match(&mut self, field_value: &str) -> Result<(), JournalError> {
        // SAFETY: the handle is open; the pointer and length describe a live buffer
        // that the library copies.
        let r = unsafe {
            (self.api.add_match)(self.handle, field_value.as_ptr().cast(), field_value.len())
        };
        check("sd_journal_add_match", r).map(drop)
    }

    /// Largest field value returned whole; longer ones are cut to this.
    #[allow(unsafe_code)]
    pub(crate) fn set_data_threshold(&mut self, bytes: usize) -> Result<(), JournalError> {
        // SAFETY: the handle is open.
        check("sd_journal_set_data_threshold", unsafe {
            (self.api.set_data_threshold)(self.handle, bytes)
        })
        .map(drop)
    }

    /// Before the first entry.
    #[allow(unsafe_code)]
    pub(crate) fn seek_head(&mut self) -> Result<(), JournalError> {
        // SAFETY: the handle is open.
        check("sd_journal_seek_head", unsafe {
            (self.api.seek_head)(self.handle)
        })
        .map(drop)
    }

    /// On the last entry, so that [`Journal::next`] returns only later ones. (After
    /// `seek_tail` alone, `next` would return the last entry again.)
    #[allow(unsafe_code)]
    pub(crate) fn seek_end(&mut self) -> Result<(), JournalError> {
        // SAFETY: the handle is open.
        check("sd_journal_seek_tail", unsafe {
            (self.api.seek_tail)(self.handle)
        })?;
        self.previous().map(drop)
    }

    /// Moves to the previous entry; false at the start.
    #[allow(unsafe_code)]
    pub(crate) fn previous(&mut self) -> Result<bool, JournalError> {
        // SAFETY: the handle is open.
        let r = unsafe { (self.api.previous)(self.handle) };
        check("sd_journal_previous", r).map(|r| r > 0)
    }

    /// Near the entry of `cursor` (the next `next` lands on it, or on the entry after
    /// where it was when it is gone).
    #[allow(unsafe_code)]
    pub(crate) fn seek_cursor(&mut self, cursor: &str) -> Result<(), JournalError> {
        let c = cstring(cursor)?;
        // SAFETY: the handle is open; `c` is NUL-terminated and outlives the call.
        check("sd_journal_seek_cursor", unsafe {
            (self.api.seek_cursor)(self.handle, c.as_ptr())
        })
        .map(drop)
    }

    /// Whether the current entry is the one of `cursor`.
    #[allow(unsafe_code)]
    pub(crate) fn test_cursor(&mut self, cursor: &str) -> Result<bool, JournalError> {
        let c = cstring(cursor)?;
        // SAFETY: the handle is open; `c` is NUL-terminated and outlives the call.
        let r = unsafe { (self.api.test_cursor)(self.handle, c.as_ptr()) };
        check("sd_journal_test_cursor", r).map(|r| r > 0)
    }

    /// Moves to the next entry; false at the end.
    #[allow(unsafe_code)]
    pub(crate) fn next(&mut self) -> Result<bool, JournalError> {
        // SAFETY: the handle is open.
        let r = unsafe { (self.api.next)(self.handle) };
        check("sd_journal_next", r).map(|r| r > 0)
    }

    /// The cursor of the current entry.
    #[allow(unsafe_code)]
    pub(crate) fn cursor(&mut self) -> Result<String, JournalError> {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: the handle is open; `out` is a valid out-pointer.
        check("sd_journal_get_cursor", unsafe {
            (self.api.get_cursor)(self.handle, &mut out)
        })?;
        if out.is_null() {
            return Err(JournalError::Call {
                call: "sd_journal_get_cursor",
                errno: libc_einval(),
            });
        }
        // SAFETY: on success `out` is a NUL-terminated string malloc'ed by the library,
        // ours to free once copied.
        let cursor = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `out` came from malloc in the library and is freed exactly once.
        unsafe { (self.api.free)(out.cast()) };
        Ok(cursor)
    }

    /// Wall-clock time of the current entry, microseconds since the epoch.
    #[allow(unsafe_code)]
    pub(crate) fn realtime_usec(&mut self) -> Result<u64, JournalError> {
        let mut usec = 0u64;
        // SAFETY: the handle is open and on an entry; `usec` is a valid out-pointer.
        check("sd_journal_get_realtime_usec", unsafe {
            (self.api.get_realtime_usec)(self.handle, &mut usec)
        })?;
        Ok(usec)
    }

    /// Every `FIELD=value` of the current entry, copied out (values may be binary).
    #[allow(unsafe_code)]
    pub(crate) fn fields(&mut self, mut each: impl FnMut(&[u8])) -> Result<(), JournalError> {
        // SAFETY: the handle is open.
        unsafe { (self.api.restart_data)(self.handle) };
        loop {
            let mut data: *const c_void = ptr::null();
            let mut len = 0usize;
            // SAFETY: the handle is open and on an entry; both out-pointers are valid.
            let r = unsafe { (self.api.enumerate_data)(self.handle, &mut data, &mut len) };
            if check("sd_journal_enumerate_data", r)? == 0 {
                return Ok(());
            }
            if data.is_null() {
                continue;
            }
            // SAFETY: on success `data` points at `len` bytes owned by the library,
            // valid until the next call on the handle; they are used before it.
            let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
            each(bytes);
        }
    }

    /// Blocks up to `timeout_usec` for new entries.
    #[allow(unsafe_code)]
    pub(crate) fn wait(&mut self, timeout_usec: u64) -> Result<Wake, JournalError> {
        // SAFETY: the handle is open.
        let r = unsafe { (self.api.wait)(self.handle, timeout_usec) };
        // SD_JOURNAL_NOP is 0; APPEND (1) and INVALIDATE (2) both mean "look again".
        Ok(if check("sd_journal_wait", r)? == 0 {
            Wake::Nop
        } else {
            Wake::Changed
        })
    }
}

impl Drop for Journal {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the handle was opened by `Journal::open` and is closed exactly once.
        unsafe { (self.api.close)(self.handle) };
    }
}

/// The message of a negative errno the journal API returned.
fn os_error(errno: &i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(*errno)
}

/// EINVAL, without a libc dependency.
fn libc_einval() -> i32 {
    22
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_is_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = match Journal::open(Some(dir.path())) {
            Ok(j) => j,
            // The machine lacks libsystemd: the error must say so.
            Err(e @ JournalError::Load(_)) => {
                assert!(e.to_string().contains("libsystemd.so.0"), "{e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        j.seek_head().unwrap();
        assert!(!j.next().unwrap());
        // The first wait sets up inotify and reports a change; then all is quiet.
        j.wait(1000).unwrap();
        assert_eq!(j.wait(1000).unwrap(), Wake::Nop);
        assert!(j.add_match("A=B=C").is_ok());
        assert!(matches!(j.seek_cursor("x\0y"), Err(JournalError::Nul(_))));
    }
}
