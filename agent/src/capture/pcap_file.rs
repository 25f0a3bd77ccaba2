//! Reader for pcap and pcapng capture files. (Being written.)
